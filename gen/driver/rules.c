/* The engine-specific pieces of @top@_driver.c, one section per element rule, helper and
 * structure check; secateur.gen.driver copies the sections an engine's format uses. A rule
 * lists the elements its doc in manifest.json ("placements") names, with the variables in
 * the order of gen/driver.py's RULES, as verif/bundle_host.py's _elements_<rule> does. */

/*@ helper weight */
/* w[m, n], 0 outside the matrix (the padding of edge tiles). */
static int64_t @top@_weight(const struct @top@_layer *l, int64_t m, int64_t n)
{
    if (m < 0 || n < 0 || m >= (int64_t)l->M || n >= (int64_t)l->N)
        return 0;
    return l->w[(size_t)m * l->N + (size_t)n];
}

/*@ rule row */
static int @top@_elements_row(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t e[3];
    uint32_t m;
    for (m = 0; m < l->M; m++) {
        e[0] = m;
        e[1] = l->mults != NULL ? l->mults[m] : l->mult;
        e[2] = l->bias != NULL ? l->bias[m] : 0;
        @TOP@_DRV_TRY(place(ld, e));
    }
    return @TOP@_DRIVER_OK;
}

/*@ rule weight */
static int @top@_elements_weight(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t e[3];
    uint32_t m, n;
    for (m = 0; m < l->M; m++)
        for (n = 0; n < l->N; n++) {
            e[0] = m;
            e[1] = n;
            e[2] = l->w[(size_t)m * l->N + n];
            @TOP@_DRV_TRY(place(ld, e));
        }
    return @TOP@_DRIVER_OK;
}

/*@ rule nonzero_weight */
static int @top@_elements_nonzero_weight(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t e[3];
    uint32_t m, n;
    for (m = 0; m < l->M; m++)
        for (n = 0; n < l->N; n++) {
            if (l->w[(size_t)m * l->N + n] == 0)
                continue;
            e[0] = m;
            e[1] = n;
            e[2] = l->w[(size_t)m * l->N + n];
            @TOP@_DRV_TRY(place(ld, e));
        }
    return @TOP@_DRIVER_OK;
}

/*@ helper ternary_groups */
/* Whether group (r, c) (rows r*pe .. r*pe+pe-1, columns c*fan_in .. c*fan_in+fan_in-1) holds a
 * non-zero weight. */
static int @top@_group_nonzero(const struct @top@_layer *l, int64_t r, int64_t c)
{
    int64_t m, n;
    for (m = r * (int64_t)@TOP@_PARAM_PE; m < (r + 1) * (int64_t)@TOP@_PARAM_PE; m++)
        for (n = c * (int64_t)@TOP@_PARAM_FAN_IN; n < (c + 1) * (int64_t)@TOP@_PARAM_FAN_IN; n++)
            if (@top@_weight(l, m, n) != 0)
                return 1;
    return 0;
}

/*@ rule group */
static int @top@_elements_group(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rows = @top@_row_blocks(@TOP@_DRV_LAYER(l)), cols = @top@_col_blocks(@TOP@_DRV_LAYER(l));
    int64_t r, c, e[3];
    for (r = 0; r < rows; r++)
        for (c = 0; c < 32 * (int64_t)@TOP@_BITMAP_CHUNKS; c++) {
            e[0] = r;
            e[1] = c;
            e[2] = c < cols && @top@_group_nonzero(l, r, c);
            @TOP@_DRV_TRY(place(ld, e));
        }
    return @TOP@_DRIVER_OK;
}

/*@ rule stored_weight */
static int @top@_elements_stored_weight(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rows = @top@_row_blocks(@TOP@_DRV_LAYER(l)), cols = @top@_col_blocks(@TOP@_DRV_LAYER(l));
    int64_t r, c, m, n, t = 0, e[4];
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            if (!@top@_group_nonzero(l, r, c))
                continue;
            for (m = r * (int64_t)@TOP@_PARAM_PE; m < (r + 1) * (int64_t)@TOP@_PARAM_PE; m++)
                for (n = c * (int64_t)@TOP@_PARAM_FAN_IN;
                     n < (c + 1) * (int64_t)@TOP@_PARAM_FAN_IN; n++) {
                    e[0] = m;
                    e[1] = n;
                    e[2] = @top@_weight(l, m, n);
                    e[3] = t;
                    @TOP@_DRV_TRY(place(ld, e));
                }
            t++;
        }
    return @TOP@_DRIVER_OK;
}

/*@ rule row_seed */
static int @top@_elements_row_seed(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rows = @top@_row_blocks(@TOP@_DRV_LAYER(l)) * (int64_t)@TOP@_PARAM_PE;
    int64_t m, e[2];
    for (m = 0; m < rows; m++) {
        e[0] = m;
        e[1] = m < (int64_t)l->M ? (int64_t)l->seeds[m] : 1;
        @TOP@_DRV_TRY(place(ld, e));
    }
    return @TOP@_DRIVER_OK;
}

/*@ rule kept */
/* Row m's kept weights: position j of its visit order (format.lfsr) from seeds[m]. */
static int @top@_elements_kept(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rows = @top@_row_blocks(@TOP@_DRV_LAYER(l)) * (int64_t)@TOP@_PARAM_PE;
    uint32_t width = (uint32_t)@top@_layer_lfsr_width(@TOP@_DRV_LAYER(l));
    int64_t m, j, e[4];
    for (m = 0; m < rows; m++) {
        uint32_t state = m < (int64_t)l->M ? l->seeds[m] : 1u;
        for (j = 0; j < (int64_t)l->k; j++) {
            e[0] = m;
            e[1] = j;
            e[2] = m < (int64_t)l->M ? (int64_t)state - 1 : 0;
            e[3] = @top@_weight(l, m, e[2]);
            @TOP@_DRV_TRY(place(ld, e));
            state = @top@_lfsr_next_accepted(state, width, l->N);
        }
    }
    return @TOP@_DRIVER_OK;
}

/*@ rule block */
/* Every block (bi, bj) that holds a non-zero weight, with the offset of its first one. */
static int @top@_elements_block(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t p = l->p, bi, bj, m, n, e[3];
    for (bi = 0; bi < (int64_t)l->M / p; bi++)
        for (bj = 0; bj < (int64_t)l->N / p; bj++)
            for (m = bi * p; m < (bi + 1) * p; m++) {
                for (n = bj * p; n < (bj + 1) * p && @top@_weight(l, m, n) == 0; n++)
                    ;
                if (n < (bj + 1) * p) {
                    e[0] = bi;
                    e[1] = bj;
                    e[2] = @top@_block_offset(@TOP@_DRV_LAYER(l), m, n);
                    @TOP@_DRV_TRY(place(ld, e));
                    break;
                }
            }
    return @TOP@_DRIVER_OK;
}

/*@ rule macro */
static int @top@_elements_macro(struct @top@_loader *ld, @top@_place_fn place)
{
    int64_t e[1];
    for (e[0] = 0; e[0] < (int64_t)@TOP@_PARAM_PE; e[0]++)
        @TOP@_DRV_TRY(place(ld, e));
    return @TOP@_DRIVER_OK;
}

/*@ helper cim_mask_lfsr */
/* Tile (rt, ct)'s seed and kept rows k (layer.ks, or layer.k for every tile). */
static uint32_t @top@_tile_seed(const struct @top@_layer *l, int64_t rt, int64_t ct)
{
    return l->seeds[rt * @top@_col_tiles(@TOP@_DRV_LAYER(l)) + ct];
}

static uint32_t @top@_tile_k(const struct @top@_layer *l, int64_t rt, int64_t ct)
{
    return l->ks != NULL ? l->ks[rt * @top@_col_tiles(@TOP@_DRV_LAYER(l)) + ct] : l->k;
}

/* The rows tile (rt, ct) keeps: the first k states of its LFSR from its seed (format.lfsr,
 * n = macro_rows). */
static void @top@_tile_kept(const struct @top@_layer *l, int64_t rt, int64_t ct,
                            unsigned char *kept)
{
    uint32_t width = (uint32_t)@top@_max(2, @top@_bit_length(@TOP@_PARAM_MACRO_ROWS));
    uint32_t state = @top@_tile_seed(l, rt, ct), j, r;
    for (r = 0; r < @TOP@_PARAM_MACRO_ROWS; r++)
        kept[r] = 0;
    for (j = 0; j < @top@_tile_k(l, rt, ct); j++) {
        kept[state - 1u] = 1;
        state = @top@_lfsr_next_accepted(state, width, @TOP@_PARAM_MACRO_ROWS);
    }
}

/*@ helper cim_mask_none */
/* Every tile keeps every row (row_mask none). */
static void @top@_tile_kept(const struct @top@_layer *l, int64_t rt, int64_t ct,
                            unsigned char *kept)
{
    uint32_t r;
    (void)l;
    (void)rt;
    (void)ct;
    for (r = 0; r < @TOP@_PARAM_MACRO_ROWS; r++)
        kept[r] = 1;
}

/*@ helper cim_cells */
/* Cell (r, col) of tile (rt, ct): bit col % 8 of w[ct*slots + col/8, rt*macro_rows + r]. */
static int64_t @top@_cell(const struct @top@_layer *l, int64_t rt, int64_t ct, int64_t r,
                          int64_t col)
{
    int64_t w = @top@_weight(l, ct * (int64_t)@TOP@_SLOTS + col / 8,
                             rt * (int64_t)@TOP@_PARAM_MACRO_ROWS + r);
    return ((uint8_t)w >> (col % 8)) & 1;
}

/*@ rule tile */
static int @top@_elements_tile(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rts = @top@_row_tiles(@TOP@_DRV_LAYER(l)), cts = @top@_col_tiles(@TOP@_DRV_LAYER(l));
    int64_t e[4];
    for (e[0] = 0; e[0] < rts; e[0]++)
        for (e[1] = 0; e[1] < cts; e[1]++) {
            e[2] = @top@_tile_seed(l, e[0], e[1]);
            e[3] = @top@_tile_k(l, e[0], e[1]);
            @TOP@_DRV_TRY(place(ld, e));
        }
    return @TOP@_DRIVER_OK;
}

/*@ rule kept_cell */
static int @top@_elements_kept_cell(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rts = @top@_row_tiles(@TOP@_DRV_LAYER(l)), cts = @top@_col_tiles(@TOP@_DRV_LAYER(l));
    int64_t e[5];
    unsigned char kept[@TOP@_PARAM_MACRO_ROWS];
    for (e[0] = 0; e[0] < rts; e[0]++)
        for (e[1] = 0; e[1] < cts; e[1]++) {
            @top@_tile_kept(l, e[0], e[1], kept);
            for (e[2] = 0; e[2] < (int64_t)@TOP@_PARAM_MACRO_ROWS; e[2]++) {
                if (!kept[e[2]])
                    continue;
                for (e[3] = 0; e[3] < (int64_t)@TOP@_PARAM_MACRO_COLS; e[3]++) {
                    e[4] = @top@_cell(l, e[0], e[1], e[2], e[3]);
                    @TOP@_DRV_TRY(place(ld, e));
                }
            }
        }
    return @TOP@_DRIVER_OK;
}

/*@ rule group_column */
static int @top@_elements_group_column(struct @top@_loader *ld, @top@_place_fn place)
{
    const struct @top@_layer *l = ld->layer;
    int64_t rts = @top@_row_tiles(@TOP@_DRV_LAYER(l)), cts = @top@_col_tiles(@TOP@_DRV_LAYER(l));
    int64_t r, e[5];
    unsigned char kept[@TOP@_PARAM_MACRO_ROWS];
    for (e[0] = 0; e[0] < rts; e[0]++)
        for (e[1] = 0; e[1] < cts; e[1]++) {
            @top@_tile_kept(l, e[0], e[1], kept);
            for (e[2] = 0; e[2] < (int64_t)@TOP@_GROUPS; e[2]++)
                for (e[3] = 0; e[3] < (int64_t)@TOP@_PARAM_MACRO_COLS; e[3]++) {
                    e[4] = 0;
                    for (r = e[2] * (int64_t)@TOP@_PARAM_ROWS;
                         r < (e[2] + 1) * (int64_t)@TOP@_PARAM_ROWS
                         && r < (int64_t)@TOP@_PARAM_MACRO_ROWS; r++)
                        if (kept[r] && @top@_cell(l, e[0], e[1], r, e[3]))
                            e[4] = 1;
                    @TOP@_DRV_TRY(place(ld, e));
                }
        }
    return @TOP@_DRIVER_OK;
}

/*@ check dense */
    (void)layer;
    return @TOP@_DRIVER_OK;

/*@ check ternary */
    /* Weights in {-1, 0, +1}. */
    uint32_t m, n;
    for (m = 0; m < layer->M; m++)
        for (n = 0; n < layer->N; n++) {
            int8_t w = layer->w[(size_t)m * layer->N + n];
            if (w < -1 || w > 1)
                return @TOP@_DRIVER_ERR_STRUCTURE;
        }
    return @TOP@_DRIVER_OK;

/*@ check lfsr */
    /* k in [1, N], seeds in [1, N], and w non-zero only at each row's kept positions. */
    uint32_t width, m, n, j;
    if (layer->seeds == NULL)
        return @TOP@_DRIVER_ERR_ARG;
    if (layer->k < 1u || layer->k > layer->N)
        return @TOP@_DRIVER_ERR_STRUCTURE;
    width = (uint32_t)@top@_layer_lfsr_width(@TOP@_DRV_LAYER(layer));
    for (m = 0; m < layer->M; m++) {
        uint32_t state = layer->seeds[m], nonzero = 0u, kept = 0u;
        if (state < 1u || state > layer->N)
            return @TOP@_DRIVER_ERR_STRUCTURE;
        for (n = 0; n < layer->N; n++)
            nonzero += layer->w[(size_t)m * layer->N + n] != 0;
        for (j = 0; j < layer->k; j++) {
            kept += layer->w[(size_t)m * layer->N + state - 1u] != 0;
            state = @top@_lfsr_next_accepted(state, width, layer->N);
        }
        if (kept != nonzero)
            return @TOP@_DRIVER_ERR_STRUCTURE;
    }
    return @TOP@_DRIVER_OK;

/*@ check permdiag */
    /* p in [min_p, max_p] dividing M and N; in each p x p block, every non-zero weight on the
     * same permuted diagonal (block_offset). */
    int64_t p = layer->p, m, n, offset;
    if (p < (int64_t)@TOP@_PARAM_MIN_P || p > (int64_t)@TOP@_PARAM_MAX_P
        || layer->M % layer->p != 0u || layer->N % layer->p != 0u)
        return @TOP@_DRIVER_ERR_STRUCTURE;
    for (m = 0; m < (int64_t)layer->M; m++)
        for (n = 0; n < (int64_t)layer->N; n++) {
            int64_t bi = m / p, bj = n / p, r, c;
            if (@top@_weight(layer, m, n) == 0)
                continue;
            offset = @top@_block_offset(@TOP@_DRV_LAYER(layer), m, n);
            for (r = bi * p; r < (bi + 1) * p; r++)
                for (c = bj * p; c < (bj + 1) * p; c++)
                    if (@top@_weight(layer, r, c) != 0
                        && @top@_block_offset(@TOP@_DRV_LAYER(layer), r, c) != offset)
                        return @TOP@_DRIVER_ERR_STRUCTURE;
        }
    return @TOP@_DRIVER_OK;

/*@ check cim_none */
    /* At most pe tiles. */
    if (@top@_row_tiles(@TOP@_DRV_LAYER(layer)) * @top@_col_tiles(@TOP@_DRV_LAYER(layer))
        > (int64_t)@TOP@_PARAM_PE)
        return @TOP@_DRIVER_ERR_CAPACITY;
    return @TOP@_DRIVER_OK;

/*@ check cim_lfsr */
    /* At most pe tiles; seeds and k in [1, macro_rows]; w non-zero only on kept rows. */
    int64_t rts = @top@_row_tiles(@TOP@_DRV_LAYER(layer));
    int64_t cts = @top@_col_tiles(@TOP@_DRV_LAYER(layer)), rt, ct, r, out;
    unsigned char kept[@TOP@_PARAM_MACRO_ROWS];
    if (rts * cts > (int64_t)@TOP@_PARAM_PE)
        return @TOP@_DRIVER_ERR_CAPACITY;
    if (layer->seeds == NULL)
        return @TOP@_DRIVER_ERR_ARG;
    for (rt = 0; rt < rts; rt++)
        for (ct = 0; ct < cts; ct++) {
            uint32_t seed = @top@_tile_seed(layer, rt, ct), k = @top@_tile_k(layer, rt, ct);
            if (seed < 1u || seed > @TOP@_PARAM_MACRO_ROWS || k < 1u
                || k > @TOP@_PARAM_MACRO_ROWS)
                return @TOP@_DRIVER_ERR_STRUCTURE;
            @top@_tile_kept(layer, rt, ct, kept);
            for (r = 0; r < (int64_t)@TOP@_PARAM_MACRO_ROWS; r++)
                for (out = ct * (int64_t)@TOP@_SLOTS; !kept[r] && out < (ct + 1) * (int64_t)@TOP@_SLOTS; out++)
                    if (@top@_weight(layer, out, rt * (int64_t)@TOP@_PARAM_MACRO_ROWS + r) != 0)
                        return @TOP@_DRIVER_ERR_STRUCTURE;
        }
    return @TOP@_DRIVER_OK;
