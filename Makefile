# secateur: see README.md. All targets live in flow.mk.
include flow.mk
