# mk/dist.mk - faceid.dist_mpi, the MPI half of faceid.dist (data-parallel
# training across processes and machines). Optional: built only when mpicc
# (or `pkg-config ompi`) is found, e.g. from Debian's libopenmpi-dev;
# without it faceid.dist reports that the rock was built without MPI.
# `make bench-dist` compares 1 process x 2 threads with 2 processes x 1.

# rules below must not become the default goal of the including Makefile
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

MPICC      ?= mpicc
MPIRUN     ?= mpirun
DIST_SRC   := $(sort $(wildcard csrc/dist/*.c))
DIST_HDR   := $(wildcard csrc/dist/*.h)
DIST_OBJ   := $(patsubst csrc/dist/%.c,$(BUILD)/obj/dist/%.o,$(DIST_SRC))
DIST_MODULE := $(BUILD)/faceid/dist_mpi.so

# mpicc wraps the system compiler with MPI's flags; otherwise ask
# pkg-config; `make WITH_MPI=no` leaves MPI out even where it is installed
WITH_MPI   ?= auto
ifeq ($(WITH_MPI),no)
DIST_CC    :=
else ifneq ($(shell command -v $(MPICC) 2>/dev/null),)
DIST_CC    := $(MPICC)
DIST_FLAGS :=
DIST_LIBS  :=
else ifeq ($(shell pkg-config --exists ompi 2>/dev/null && echo yes),yes)
DIST_CC    := $(CC)
DIST_FLAGS := $(shell pkg-config --cflags ompi)
DIST_LIBS  := $(shell pkg-config --libs ompi)
endif

ifneq ($(DIST_CC),)
ifneq ($(DIST_SRC),)
EXTRA_MODULES += $(DIST_MODULE)
endif
endif

$(BUILD)/obj/dist/%.o: csrc/dist/%.c $(HDR) $(DIST_HDR) | check-deps
	@mkdir -p $(dir $@)
	$(DIST_CC) $(ALL_CFLAGS) $(DIST_FLAGS) -c $< -o $@

$(DIST_MODULE): $(DIST_OBJ)
	@mkdir -p $(dir $@)
	$(DIST_CC) $(LIBFLAG) $(CFLAGS) $(LDFLAGS) -pthread -o $@ $(DIST_OBJ) $(DIST_LIBS) -ldl

# mpirun refuses root unless told; --bind-to none lets a rank's threads
# use every core it was given (the default pins each rank to one core)
DIST_ENV  := LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' \
             OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
BENCH_DIST_ARGS ?= --input 64 --batch 16 --steps 5
.PHONY: bench-dist
bench-dist: all
	@test -f $(DIST_MODULE) || { echo "faceid: bench-dist needs MPI (Debian: libopenmpi-dev openmpi-bin)"; exit 1; }
	@$(DIST_ENV) $(MPIRUN) --oversubscribe --bind-to none -np 1 $(LUA) bench/dist.lua --threads 2 $(BENCH_DIST_ARGS)
	@$(DIST_ENV) $(MPIRUN) --oversubscribe --bind-to none -np 2 $(LUA) bench/dist.lua --threads 1 $(BENCH_DIST_ARGS)
