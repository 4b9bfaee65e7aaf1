// Batch harness for every secateur engine: streams a layer and a batch of input vectors from
// files into the engine's three streams and writes the results and cycle counts to files.
// One file serves Verilator (--binary --timing) and Icarus, so both simulators run the same
// stimulus. Written as clocked RTL: the handshake is sampled in always blocks at the rising
// edge, which is race-free in both simulators.
//
// Define SECATEUR_TOP to the engine's top module. Parameters: LOAD_W, ACT_W, RES_W (payload
// widths). Plusargs: +load=F +nload=N (hex "addr data" per line), +act=F +nact=N (hex payload
// per line), +res=F +nres=N (results written, hex per line), +stats=F, +max_cycles=N.
module secateur_harness;
  parameter LOAD_W = 64;
  parameter ACT_W = 8;
  parameter RES_W = 8;
  localparam DATA_W = 32;
  localparam ADDR_W = LOAD_W - DATA_W;

  reg clk = 1'b0;
  // Reset rises at time 1 rather than starting high: Icarus does not run an `always @*`
  // block at time 0 (SystemVerilog semantics), and the engines' next-state logic, as Yosys
  // writes it, is such blocks gated by `rst`. Where the other inputs of one never change
  // (a register whose next value is constant 0 while idle), only an event on `rst` makes it
  // compute its value before the first edge.
  reg rst = 1'b0;
  initial #1 rst = 1'b1;
  always #5 clk = ~clk;

  reg [LOAD_W-1:0] load_payload = {LOAD_W{1'b0}};
  reg load_valid = 1'b0;
  wire load_ready;
  reg [ACT_W-1:0] act_payload = {ACT_W{1'b0}};
  reg act_valid = 1'b0;
  wire act_ready;
  wire [RES_W-1:0] res_payload;
  wire res_valid;
  wire res_ready = 1'b1;

  `SECATEUR_TOP dut (
    .clk(clk), .rst(rst),
    .load__payload(load_payload), .load__valid(load_valid), .load__ready(load_ready),
    .act__payload(act_payload), .act__valid(act_valid), .act__ready(act_ready),
    .res__payload(res_payload), .res__valid(res_valid), .res__ready(res_ready)
  );

  reg [1023:0] load_path, act_path, res_path, stats_path;
  integer load_file, act_file, res_file, stats_file, scanned;
  integer n_load, n_act, n_res, max_cycles;
  integer loaded = 0, sent = 0, received = 0;
  integer cycle = 0, first_act_cycle = -1, last_res_cycle = -1, load_done_cycle = -1;
  reg [ADDR_W-1:0] next_addr;
  reg [DATA_W-1:0] next_data;
  reg [ACT_W-1:0] next_act;

  task next_load_beat;
    begin
      if (loaded < n_load) begin
        scanned = $fscanf(load_file, "%h %h\n", next_addr, next_data);
        if (scanned != 2) begin $display("harness: bad load file line %0d", loaded); $fatal(1); end
        load_payload <= {next_data, next_addr};
        load_valid <= 1'b1;
      end else begin
        load_valid <= 1'b0;
      end
    end
  endtask

  task next_act_beat;
    begin
      if (sent < n_act) begin
        scanned = $fscanf(act_file, "%h\n", next_act);
        if (scanned != 1) begin $display("harness: bad act file line %0d", sent); $fatal(1); end
        act_payload <= next_act;
        act_valid <= 1'b1;
      end else begin
        act_valid <= 1'b0;
      end
    end
  endtask

  initial begin
    if (!$value$plusargs("load=%s", load_path) || !$value$plusargs("nload=%d", n_load) ||
        !$value$plusargs("act=%s", act_path) || !$value$plusargs("nact=%d", n_act) ||
        !$value$plusargs("res=%s", res_path) || !$value$plusargs("nres=%d", n_res) ||
        !$value$plusargs("stats=%s", stats_path)) begin
      $display("harness: missing plusargs"); $fatal(1);
    end
    if (!$value$plusargs("max_cycles=%d", max_cycles)) max_cycles = 100000000;
    load_file = $fopen(load_path, "r");
    act_file = $fopen(act_path, "r");
    res_file = $fopen(res_path, "w");
    if (load_file == 0 || act_file == 0 || res_file == 0) begin
      $display("harness: cannot open the stimulus or result files"); $fatal(1);
    end
  end

  always @(posedge clk) begin
    cycle <= cycle + 1;
    if (cycle == 2) begin
      rst <= 1'b0;
      next_load_beat;
    end else if (!rst) begin
      if (load_valid && load_ready) begin
        loaded = loaded + 1;
        next_load_beat;
      end
      // Input vectors follow the whole layer, as the engine protocol requires.
      if (loaded == n_load && load_done_cycle < 0) begin
        load_done_cycle <= cycle;
        next_act_beat;
      end
      if (act_valid && act_ready) begin
        if (first_act_cycle < 0) first_act_cycle <= cycle;
        sent = sent + 1;
        next_act_beat;
      end
      if (res_valid && res_ready) begin
        $fwrite(res_file, "%h\n", res_payload);
        received = received + 1;
        if (received == n_res) begin
          last_res_cycle = cycle;
          stats_file = $fopen(stats_path, "w");
          $fwrite(stats_file, "{\"cycles\": %0d, \"load_cycles\": %0d, \"first_act_cycle\": %0d, \"last_res_cycle\": %0d}\n",
                  last_res_cycle - first_act_cycle + 1, load_done_cycle - 2, first_act_cycle, last_res_cycle);
          $fclose(stats_file);
          $fclose(res_file);
          $finish;
        end
      end
    end
    if (cycle > max_cycles) begin
      $display("harness: timeout after %0d cycles (loaded %0d/%0d, sent %0d/%0d, received %0d/%0d)",
               cycle, loaded, n_load, sent, n_act, received, n_res);
      $fatal(1);
    end
  end
endmodule
