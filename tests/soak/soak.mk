# ---- Soak (tests/soak/README.md) --------------------------------------------
# Included by the Makefile. `make soak` runs SOAK_CLIENTS clients against one
# slyced with evictions all the time for SOAK_SECONDS and fails on a wrong
# output, an unexpected error, a crash, fds left open or RSS growth past its
# noise bound; latency drift is reported. Not part of `check` (it takes
# SOAK_SECONDS plus a few seconds); with SANITIZE= it soaks the sanitized
# daemon (RSS then not judged).
SOAK_SECONDS ?= 60
SOAK_CLIENTS ?= 16
SOAK_WINDOWS ?= 10
SOAK_COPY_GBPS ?= 0
SOAK_BIN := $(BUILD)/tests/soak/soak
SOAK_OBJ := $(call obj,$(wildcard tests/soak/*.c))

$(SOAK_BIN): $(SOAK_OBJ) $(LIBSLYCE_A)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(SOAK_OBJ) $(LIBSLYCE_A) $(CJSON_LIBS) -lpthread -lm

# Built with everything, so that it never rots; run only by `make soak`.
all: $(SOAK_BIN)

soak: $(SOAK_BIN) $(SLYCED)
	@$(SAN_ENV) $(SOAK_BIN) --slyced $(abspath $(SLYCED)) --seconds $(SOAK_SECONDS) \
	  --clients $(SOAK_CLIENTS) --windows $(SOAK_WINDOWS) --copy-gbps $(SOAK_COPY_GBPS)

.PHONY: soak
# ---- end of Soak --------------------------------------------------------------
