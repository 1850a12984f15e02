# faceid - build, test, sanitize, install.
# `make` builds build/faceid/core.so; `make test` runs the busted suite under
# Lua 5.4; `make sanitize` rebuilds with ASan+UBSan and runs the whole suite.
# LuaRocks drives this file too (faceid-scm-1.rockspec, build type "make").

LUA        ?= lua5.4
BUSTED     ?= /usr/bin/busted
LUA_INCDIR ?= /usr/include/lua5.4
CFLAGS     ?= -O2
LIBFLAG    ?= -shared
SEED       ?= 20181129
BUILD      ?= build

PKG_CFLAGS := $(shell pkg-config --cflags openblas stb)
PKG_LIBS   := $(shell pkg-config --libs openblas stb) -lm
WARN       := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes
ALL_CFLAGS := -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -pthread $(WARN) $(CFLAGS) \
              -I$(LUA_INCDIR) $(PKG_CFLAGS)

SRC    := $(sort $(wildcard csrc/*.c))
HDR    := $(wildcard csrc/*.h)
OBJ    := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SRC))
MODULE := $(BUILD)/faceid/core.so

BUSTED_ARGS := --lpath='lua/?.lua;lua/?/init.lua;spec/?.lua' \
               --cpath='$(BUILD)/?.so' --seed=$(SEED) -o spec/summary_output.lua

.PHONY: all test sanitize demo bench bench-compare install clean check-deps deps fuzz soak
# Optional parts (mk/*.mk) add their own modules to EXTRA_MODULES.
EXTRA_MODULES :=
-include $(sort $(wildcard mk/*.mk))
all: $(MODULE) $(EXTRA_MODULES)

# Debian packages the build, the tests and the demo need; `make test` and
# `make demo` install the missing ones first (as root, or through sudo).
DEB_PKGS := lua5.4 liblua5.4-dev luarocks lua-busted libopenblas-dev libstb-dev pkg-config gcc make
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "faceid: installing Debian packages:" $$missing; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

$(BUILD)/obj/%.o: csrc/%.c $(HDR) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# The Winograd transforms are loops over small fixed-size arrays of
# vectors: -O3 unrolls them into registers (F(4x4, 3x3) ran 1.4-2x faster
# measured alone). The later -O wins over CFLAGS'.
$(BUILD)/obj/winograd.o: ALL_CFLAGS += -O3

$(MODULE): $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(CFLAGS) $(LDFLAGS) -pthread -o $@ $(OBJ) $(PKG_LIBS)

check-deps:
	@pkg-config --exists openblas stb || { echo "faceid: needs Debian packages libopenblas-dev libstb-dev pkg-config (see README)"; exit 1; }
	@test -f $(LUA_INCDIR)/lua.h || { echo "faceid: needs liblua5.4-dev ($(LUA_INCDIR)/lua.h not found)"; exit 1; }

test: deps
	@$(MAKE) --no-print-directory all
	$(LUA) $(BUSTED) $(BUSTED_ARGS) spec

# ASan+UBSan: lua5.4 itself is not instrumented, so the ASan runtime is preloaded.
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
sanitize: deps
	$(MAKE) BUILD=build-san CFLAGS="$(SAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all
	ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	FACEID_SANITIZE=1 $(LUA) $(BUSTED) $(subst $(BUILD),build-san,$(BUSTED_ARGS)) spec

# `faceid demo`: trains a small model for a few minutes on the AT&T faces
# (synthetic identities when ../shared/data is absent), evaluates it on
# people held out of training and writes its pictures to demo-out/
DEMO_ARGS ?=
demo: deps
	@$(MAKE) --no-print-directory $(MODULE)
	LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' $(LUA) bin/faceid demo $(DEMO_ARGS)

# Speed and memory (never in tests): each configuration in a fresh process
BENCH_INPUTS ?= 128
BENCH_BATCH  ?= 32
BENCH_THREADS ?= 2
BENCH_RUN = LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' $(LUA) bench/densenet.lua
bench: $(MODULE)
	@$(BENCH_RUN) --mode sgemm --threads $(BENCH_THREADS)
	@for s in $(BENCH_INPUTS); do \
	  $(BENCH_RUN) --mode train --input $$s --batch $(BENCH_BATCH) --threads $(BENCH_THREADS) || exit 1; \
	  $(BENCH_RUN) --mode eval --input $$s --batch $(BENCH_BATCH) --threads $(BENCH_THREADS) || exit 1; \
	  LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' $(LUA) bench/loader.lua \
	    --input $$s --threads $(BENCH_THREADS) || exit 1; \
	done

# faceid and PyTorch side by side, alternating, one table of ratios (bench/compare.lua)
BENCH_REPEAT ?= 3
BENCH_STEPS  ?= 5
bench-compare: $(MODULE)
	LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' $(LUA) bench/compare.lua \
	  --inputs "$(BENCH_INPUTS)" --batch $(BENCH_BATCH) --threads $(BENCH_THREADS) \
	  --repeat $(BENCH_REPEAT) --steps $(BENCH_STEPS)

# libFuzzer harnesses (clang) and the long-run memory check
fuzz:
	$(MAKE) -C fuzz
soak: $(MODULE)
	LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' $(LUA) bench/soak.lua

# LuaRocks install step (INST_* come from the rockspec)
install: all
	mkdir -p $(INST_LIBDIR)/faceid $(INST_LUADIR)/faceid
	cp $(BUILD)/faceid/*.so $(INST_LIBDIR)/faceid/
	cp lua/faceid/*.lua $(INST_LUADIR)/faceid/
	if [ -n "$(INST_BINDIR)" ] && [ -f bin/faceid ]; then \
	  mkdir -p $(INST_BINDIR) && cp bin/faceid $(INST_BINDIR)/faceid && chmod 755 $(INST_BINDIR)/faceid; fi

clean:
	rm -rf build build-san
