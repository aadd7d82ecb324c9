# slyced — build, test, run, install.
#
#   make            build slyced, libslyce.{so,a}, slyctl and the tests
#   make deps       install what is missing (Debian packages, PyTorch venv)
#   make test       deps, then build and run every test
#   make check      build and run every test without touching the network
#   make run        deps, build, serve config/slyced.json in the foreground
#   make bench      benchmarks, each a ratio against its floor (tests/bench/)
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (tests/fuzz/)
#   make soak       many clients with evictions for SOAK_SECONDS (tests/soak/)
#   make install    PREFIX=/usr/local DESTDIR=
#
# Knobs: VENV= (PyTorch venv, shared by every clone), TORCH_DIR= (any
# libtorch), CUDA=no, CUDA_HOME=, SANITIZE=address,undefined | thread.

VERSION := 0.1.0
PREFIX ?= /usr/local
DESTDIR ?=
VENV ?= $(HOME)/.cache/slyced/venv
TORCH_DIR ?= $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/torch))
CUDA_HOME ?= /usr/local/cuda
CUDA ?= $(if $(wildcard $(CUDA_HOME)/include/cuda_runtime.h),yes,no)
SANITIZE ?=
PKG_CONFIG ?= pkg-config
# V=1 shows whole command lines.
Q := $(if $(V),,@)

ifeq ($(SANITIZE),)
BUILD ?= build
else
BUILD ?= build-$(subst $(comma),-,$(SANITIZE))
endif
comma := ,

CC ?= cc
CXX ?= c++
OPT ?= -O2
WARN := -Wall -Wextra -Werror
DEPS_PKGS := libuv libcjson libsystemd
# Third-party headers go through -isystem so that -Werror judges our code only.
PKG_CFLAGS := $(patsubst -I%,-isystem %,$(shell $(PKG_CONFIG) --cflags $(DEPS_PKGS) 2>/dev/null))
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(DEPS_PKGS) 2>/dev/null)
CJSON_CFLAGS := $(patsubst -I%,-isystem %,$(shell $(PKG_CONFIG) --cflags libcjson 2>/dev/null))
CJSON_LIBS := $(shell $(PKG_CONFIG) --libs libcjson 2>/dev/null)

# Recoverable, so that tests/ubsan.supp applies; halt_on_error=1 still stops.
SAN_FLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer $(if $(findstring undefined,$(SANITIZE)),-fsanitize-recover=undefined))
COMMON := $(OPT) -g -fPIC $(WARN) $(SAN_FLAGS) -D_GNU_SOURCE -DSLY_VERSION='"$(VERSION)"' \
  -iquote proto -iquote client -iquote daemon
CFLAGS_ALL := -std=c11 $(COMMON) $(PKG_CFLAGS) $(CFLAGS)
CXXFLAGS_ALL := -std=c++17 $(COMMON) $(PKG_CFLAGS) $(CXXFLAGS)
LDFLAGS_ALL := $(SAN_FLAGS) $(LDFLAGS)

# libtorch: PyTorch's own, from the pinned wheel (or TORCH_DIR=).
TORCH_CFLAGS := -isystem $(TORCH_DIR)/include -isystem $(TORCH_DIR)/include/torch/csrc/api/include
ifeq ($(CUDA),yes)
TORCH_LIBS := -L$(TORCH_DIR)/lib -Wl,-rpath,$(TORCH_DIR)/lib -Wl,--no-as-needed \
  -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 -Wl,--as-needed
CUDA_CFLAGS := -DSLY_HAVE_CUDA=1 -isystem $(CUDA_HOME)/include
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart
else
TORCH_LIBS := -L$(TORCH_DIR)/lib -Wl,-rpath,$(TORCH_DIR)/lib -Wl,--no-as-needed \
  -ltorch_cpu -lc10 -Wl,--as-needed
CUDA_CFLAGS :=
CUDA_LIBS :=
endif

PROTO_SRC := $(wildcard proto/*.c)
SLYCTL_SRC := $(wildcard client/slyctl*.c)
CLIENT_LIB_SRC := $(filter-out $(SLYCTL_SRC),$(wildcard client/*.c))
DAEMON_C_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
DAEMON_CXX_SRC := $(wildcard daemon/*.cpp)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
INTEG_HELPER_SRC := $(filter-out $(INTEG_SRC),$(wildcard tests/integration/*.c))
BENCH_SRC := $(wildcard tests/bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst %.cpp,$(BUILD)/obj/%.o,$(1)))

PROTO_OBJ := $(call obj,$(PROTO_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_LIB_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_C_SRC) $(DAEMON_CXX_SRC))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
INTEG_BIN := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRC))
INTEG_HELPER_OBJ := $(call obj,$(INTEG_HELPER_SRC))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/tests/bench/%,$(BENCH_SRC))

SLYCED := $(BUILD)/slyced
SLYCTL := $(BUILD)/slyctl
LIBSLYCE_SO := $(BUILD)/libslyce.so
LIBSLYCE_A := $(BUILD)/libslyce.a

.PHONY: all deps test check check-unit check-gpu check-integration check-units check-install run install clean torch-check bench
.DEFAULT_GOAL := all

all: $(SLYCED) $(SLYCTL) $(LIBSLYCE_SO) $(LIBSLYCE_A) $(UNIT_BIN) $(INTEG_BIN) $(BENCH_BIN)

deps:
	@VENV="$(VENV)" TORCH_DIR="$(filter-out $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/torch)),$(TORCH_DIR))" bash scripts/deps.sh

# Sub-makes re-read the Makefile so that TORCH_DIR sees a venv deps just made.
test: deps
	@$(MAKE) --no-print-directory check

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p run
	@echo "slyced: serving config/slyced.json; from another shell:"
	@echo "  export SLYCE_SOCKET=$(CURDIR)/run/slyced.sock; $(CURDIR)/$(SLYCTL) status"
	$(SLYCED) -c config/slyced.json --foreground

torch-check:
	@test -n "$(TORCH_DIR)" -a -f "$(TORCH_DIR)/include/torch/script.h" || { \
	  echo "no libtorch found: run 'make deps' (venv in $(VENV)) or pass TORCH_DIR=" >&2; exit 1; }

$(BUILD)/obj/%.o: %.c | torch-check
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) $(CUDA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cpp | torch-check
	@mkdir -p $(dir $@)
	@echo "  CXX     $<"
	$(Q)$(CXX) $(CXXFLAGS_ALL) $(CUDA_CFLAGS) $(TORCH_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libproto.a: $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/libdaemon.a: $(DAEMON_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

# libslyce carries the proto objects it needs, so users link one library.
$(LIBSLYCE_A): $(CLIENT_OBJ) $(PROTO_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSLYCE_SO): $(CLIENT_OBJ) $(PROTO_OBJ) client/libslyce.map
	@echo "  LD      $@"
	$(Q)$(CC) -shared -Wl,-soname,libslyce.so.0 -Wl,--version-script=client/libslyce.map $(LDFLAGS_ALL) -o $@ $(CLIENT_OBJ) $(PROTO_OBJ) $(CJSON_LIBS)

$(SLYCED): $(BUILD)/obj/daemon/main.o $(BUILD)/libdaemon.a $(BUILD)/libproto.a
	@echo "  LD      $@"
	$(Q)$(CXX) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(PKG_LIBS) $(TORCH_LIBS) $(CUDA_LIBS) -lpthread -lm

$(SLYCTL): $(call obj,$(SLYCTL_SRC)) $(LIBSLYCE_A)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(CJSON_LIBS) -lm

# Test and bench programs that link libdaemon are C compiled by $(CC) and
# linked by $(CXX) (libtorch needs the C++ runtime): `g++ -x c` would search
# the C++ headers first, which on some systems shadow C's <stdlib.h>.
$(call obj,$(UNIT_SRC)): CFLAGS_ALL += -iquote tests

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libdaemon.a $(BUILD)/libproto.a
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CXX) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) -lcriterion $(PKG_LIBS) $(TORCH_LIBS) $(CUDA_LIBS) -lpthread -lm

$(BUILD)/tests/integration/%: tests/integration/%.c $(INTEG_HELPER_OBJ) $(LIBSLYCE_A) | torch-check
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS_ALL) -iquote tests -iquote tests/integration -DSLY_TEST_BUILD_DIR='"$(abspath $(BUILD))"' \
	  -DSLY_TEST_SOURCE_DIR='"$(CURDIR)"' -MMD -MP -MF $@.d -o $@ $< $(INTEG_HELPER_OBJ) $(LIBSLYCE_A) \
	  $(LDFLAGS_ALL) -lcriterion $(CJSON_LIBS) -lpthread -lm

$(INTEG_HELPER_OBJ): CFLAGS_ALL += -iquote tests -iquote tests/integration \
  -DSLY_TEST_BUILD_DIR='"$(abspath $(BUILD))"' -DSLY_TEST_SOURCE_DIR='"$(CURDIR)"'

# Benchmarks print ratios measured side by side in one run (tests/bench/README.md).
$(BUILD)/tests/bench/%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/libdaemon.a $(BUILD)/libproto.a
	@mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CXX) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(PKG_LIBS) $(TORCH_LIBS) $(CUDA_LIBS) -lpthread -lm

# slybench (tests/bench/slybench.c) drives a real slyced through libslyce and
# calls the torch shim in process for its floors; its parts live in
# tests/bench/slybench/, out of the pattern's reach (one program per
# tests/bench/*.c).
SLYBENCH := $(BUILD)/tests/bench/slybench
SLYBENCH_OBJ := $(call obj,tests/bench/slybench.c $(wildcard tests/bench/slybench/*.c))
$(SLYBENCH_OBJ): CFLAGS_ALL += -DSLYBENCH_BUILD_DIR='"$(abspath $(BUILD))"' \
  -DSLYBENCH_SOURCE_DIR='"$(CURDIR)"'

$(SLYBENCH): $(SLYBENCH_OBJ) $(LIBSLYCE_A) $(BUILD)/libdaemon.a $(BUILD)/libproto.a
	@mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CXX) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(PKG_LIBS) $(TORCH_LIBS) $(CUDA_LIBS) -lpthread -lm

# Under a minute of benchmarking on 2 cores; a missed target is reported, not failed.
bench: $(BENCH_BIN) $(SLYCED)
	@set -e; for b in $(filter-out $(SLYBENCH),$(BENCH_BIN)); do echo "== $$b"; $$b; done
	@echo "== $(SLYBENCH)"
	@$(SLYBENCH) --slyced $(abspath $(SLYCED))

# Sanitizer runtime options; suppressions are limited to third-party code.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tests/ubsan.supp \
  TSAN_OPTIONS=suppressions=$(CURDIR)/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1 \
  OMP_NUM_THREADS=1
CRITERION_FLAGS ?= --jobs 2

ifeq ($(SANITIZE),thread)
# Criterion cannot start under ThreadSanitizer (its shared arena collides with
# TSan's shadow memory), so the tests are built plain and drive a TSan slyced:
# the daemon is where the threads are.
check: $(SLYCED)
	@$(MAKE) --no-print-directory SANITIZE= BUILD=build all
	@$(MAKE) --no-print-directory SANITIZE= BUILD=build check-unit
	@SLY_TEST_SLYCED=$(abspath $(SLYCED)) $(MAKE) --no-print-directory SANITIZE= BUILD=build check-integration
else
check: all
	@$(MAKE) --no-print-directory check-unit check-integration check-units check-fuzz $(if $(SANITIZE),,check-install)
endif

# tests/run_criterion.sh: one binary after another, each killed and run once
# more should Criterion's runner hang before its tests start.
check-unit: $(UNIT_BIN)
	@$(SAN_ENV) bash tests/run_criterion.sh "$(CRITERION_FLAGS)" $(UNIT_BIN)

# The unit tests with CUDA cases (each skips them where libtorch sees no GPU),
# for tests/gpu/run.sh on the GPU machine: the device's copies and batches,
# pinned host memory, and the shim's forwards and binds on cuda:0.
GPU_UNIT_BIN := $(addprefix $(BUILD)/tests/unit/,test_device test_hostmem test_shim test_shim_bind)
check-gpu: $(GPU_UNIT_BIN)
	@$(SAN_ENV) bash tests/run_criterion.sh "$(CRITERION_FLAGS)" $(GPU_UNIT_BIN)

check-integration: $(INTEG_BIN) $(SLYCED) $(SLYCTL)
	@$(SAN_ENV) bash tests/run_criterion.sh "$(CRITERION_FLAGS)" $(INTEG_BIN)

check-units: $(SLYCED)
	@bash tests/units/check_units.sh $(abspath $(SLYCED))

# Not under SANITIZE: the test program links the installed library without
# the sanitizer runtime.
check-install: $(SLYCED) $(SLYCTL) $(LIBSLYCE_SO) $(LIBSLYCE_A)
	@bash tests/install/check_install.sh $(BUILD)

# ---- Fuzzing (tests/fuzz/README.md) ----------------------------------------
# libFuzzer targets built with clang, whatever CC says, and without libtorch:
# each links the C files it exercises, compiled with the same sanitizers, plus
# cJSON. `make fuzz` runs every target FUZZ_SECONDS on a copy of its corpus;
# check-fuzz (part of `check`) is a short pass that fails on any crash.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_RUNS ?= 50000
FUZZ_TARGETS ?= request tensor config npy safetensors
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_SAN := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=c11 -O1 -g -fno-omit-frame-pointer $(WARN) $(FUZZ_SAN) -D_GNU_SOURCE \
  -iquote proto -iquote client -iquote daemon -iquote tests/fuzz $(PKG_CFLAGS)
FUZZ_BIN := $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))
fuzz_obj = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(1))

$(FUZZ_DIR)/fuzz_request $(FUZZ_DIR)/fuzz_tensor: $(call fuzz_obj,$(PROTO_SRC))
$(FUZZ_DIR)/fuzz_npy: $(call fuzz_obj,client/npy.c $(PROTO_SRC))
$(FUZZ_DIR)/fuzz_safetensors: $(call fuzz_obj,daemon/safetensors.c $(PROTO_SRC))
$(FUZZ_DIR)/fuzz_config: $(call fuzz_obj,daemon/config.c daemon/config_json.c daemon/log.c $(PROTO_SRC))
$(FUZZ_DIR)/fuzz_config: FUZZ_LIBS_EXTRA := $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null)

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(filter %.o,$^) \
	  $(CJSON_LIBS) $(FUZZ_LIBS_EXTRA) -lpthread -lm

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@bash tests/fuzz/run.sh $(FUZZ_DIR) time $(FUZZ_SECONDS) $(FUZZ_TARGETS)

check-fuzz: $(FUZZ_BIN)
	@bash tests/fuzz/run.sh $(FUZZ_DIR) smoke $(FUZZ_SMOKE_RUNS) $(FUZZ_TARGETS)

.PHONY: fuzz fuzz-build check-fuzz
-include $(wildcard $(FUZZ_DIR)/*.d $(FUZZ_DIR)/obj/*/*.d)
# ---- end of Fuzzing ----------------------------------------------------------

include tests/soak/soak.mk

install: $(SLYCED) $(SLYCTL) $(LIBSLYCE_SO) $(LIBSLYCE_A)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/slyced
	install -m 0755 $(SLYCED) $(SLYCTL) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 client/slyce.h $(DESTDIR)$(PREFIX)/include/
	install -m 0644 $(LIBSLYCE_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(LIBSLYCE_SO) $(DESTDIR)$(PREFIX)/lib/libslyce.so.0
	ln -sf libslyce.so.0 $(DESTDIR)$(PREFIX)/lib/libslyce.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' client/slyce.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/slyce.pc
	sed -e 's|/usr/local/bin/slyced|$(PREFIX)/bin/slyced|g' slyced.service \
	  > $(DESTDIR)$(PREFIX)/lib/systemd/system/slyced.service
	install -m 0644 slyced.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/
	install -d $(DESTDIR)$(PREFIX)/lib/sysusers.d
	install -m 0644 slyced.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/slyced.conf
	install -m 0644 config/slyced.json config/production.json config/README.md $(DESTDIR)$(PREFIX)/share/slyced/

clean:
	rm -rf build build-* run

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)
