# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install system-deps bench-deps bench clean

# apt-get needs root: use sudo when we are not root and it is there.
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)

$(STAMP): pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e "./runtime[onnx,mqtt,tflite]"
	$(BIN)/pip install --quiet -e ".[dev,spark,fleet,tracking]"
	touch $(STAMP)

install: $(STAMP)

# Build on the built-in demo data, then score 1,000 fresh rows the way a device would.
demo: $(STAMP)
	$(BIN)/edgeml build --target rpi4 --out dist/demo --force --time-budget 20
	$(BIN)/edgeml demo-data --rows 1000 --seed 7 --output dist/demo-rows.csv
	$(BIN)/edgeml-runtime score dist/demo --input dist/demo-rows.csv --output dist/demo-scored.csv
	@echo; echo "First rows of dist/demo-scored.csv (the 'failure' column is the truth, passed through):"
	@head -n 6 dist/demo-scored.csv
	@echo; $(BIN)/python -m edgeml.data.demo dist/demo-scored.csv

# The tests start their own Mosquitto broker, a local Spark (tests/test_cluster_search.py, which needs a Java
# runtime), a PostgreSQL 15 server (tests/pg.py) and a Prometheus (tests/test_fleet_prometheus.py), and build firmware
# with arm-none-eabi-gcc and newlib and run it in qemu-system-arm (tests/test_mcu.py); install them
# where they are missing. The Debian package enables a prometheus service on port 9090: the install disables it.
system-deps:
	@PATH="$$PATH:/usr/sbin" command -v mosquitto >/dev/null || { \
	  echo "installing mosquitto (the MQTT broker the tests start) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto >/dev/null; }
	@command -v java >/dev/null || { \
	  echo "installing openjdk-17-jre-headless (the Java runtime of the local Spark the tests start) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    openjdk-17-jre-headless >/dev/null; }
	@command -v systemd-analyze >/dev/null || { \
	  echo "installing systemd (systemd-analyze verify checks the unit of edgeml package) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq systemd >/dev/null; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (the headless browser tests/test_dashboard.py drives with playwright) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@test -x /usr/lib/postgresql/15/bin/initdb || { \
	  echo "installing postgresql (the store tests start their own server) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; }
	@test -x /usr/bin/prometheus || { \
	  echo "installing prometheus (tests/test_fleet_prometheus.py starts its own on a free port) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; \
	  $(SUDO) systemctl disable prometheus >/dev/null 2>&1; $(SUDO) systemctl stop prometheus >/dev/null 2>&1 || true; }
	@command -v arm-none-eabi-gcc >/dev/null || { \
	  echo "installing gcc-arm-none-eabi (the cross-compiler tests/test_mcu.py builds the firmware with) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    gcc-arm-none-eabi >/dev/null; }
	@test -f /usr/lib/arm-none-eabi/newlib/nano.specs || { \
	  echo "installing libnewlib-arm-none-eabi (the C library the firmware links) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    libnewlib-arm-none-eabi >/dev/null; }
	@command -v qemu-system-arm >/dev/null || { \
	  echo "installing qemu-system-arm (tests/test_mcu.py runs the firmware on its MPS2 boards) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends qemu-system-arm >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check toolchain runtime tests bench

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q

# bench/bench_serve.py loads the server with wrk (a load generator not written in Python) and compares its HTTP
# stack with uvicorn's (the bench extra).
bench-deps: $(STAMP)
	@command -v wrk >/dev/null || { \
	  echo "installing wrk (the load generator of bench/bench_serve.py) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/pip install --quiet -e ".[bench]"

bench: $(STAMP) bench-deps
	$(BIN)/python bench/bench_runtime.py
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/bench_drift.py
	$(BIN)/python bench/bench_verdict.py
	$(BIN)/python bench/bench_outbox.py
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_judge.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_readers.py
	$(BIN)/python bench/bench_cells.py
	$(BIN)/python bench/bench_quality.py --refit-all
	$(BIN)/python bench/bench_search.py
	$(BIN)/python bench/bench_mcu.py

clean:
	rm -rf $(VENV) dist bench/out
