# One entry point for people and CI. `make run` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/tierroute/v1/*.proto)
GEN_OUT := service
DATA ?= $(or $(TIERROUTE_DATA),../shared/data/dev.jsonl.gz)
HOST ?= 127.0.0.1
PORT ?= 50051

.PHONY: venv install protos protos-check run test node-test check fmt model bench eval clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev]'
	$(BIN)/pip install --quiet --no-deps -e clients/python
	touch $(STAMP)

venv install: $(STAMP)

# Regenerate Python code from the contract. Output paths mirror the proto
# package, so the generated imports need no rewriting.
protos: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$(GEN_OUT) \
		--mypy_out=$(GEN_OUT) --grpc_python_out=$(GEN_OUT) --mypy_grpc_out=$(GEN_OUT) $(PROTO_SRC)
	cd protos && ../$(BIN)/buf lint

# Fails when the committed generated code differs from what the protos produce.
protos-check: $(STAMP)
	@tmp=$$(mktemp -d); \
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$$tmp \
		--mypy_out=$$tmp --grpc_python_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO_SRC) && \
	for f in $$(cd $$tmp && find . -name '*.py*' -type f); do \
		cmp -s $$tmp/$$f $(GEN_OUT)/$$f || { echo "generated code is stale: $(GEN_OUT)/$$f (run make protos)"; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code matches protos"
	cd protos && ../$(BIN)/buf lint

run: $(STAMP)
	$(BIN)/tierroute serve --host $(HOST) --port $(PORT)

# node-test runs first so that pytest's summary is the last line of the run.
test: $(STAMP) protos-check node-test
	$(BIN)/python -m pytest -q

# The TypeScript client's tests start their own server from this virtualenv.
node-test: $(STAMP)
	cd clients/node && npm ci --no-audit --no-fund && npm test

check: $(STAMP) protos-check
	$(BIN)/ruff format --check service tests bench model_export clients/python
	$(BIN)/ruff check service tests bench model_export clients/python
	$(BIN)/mypy
	$(BIN)/mypy --strict clients/python/src
	$(BIN)/hadolint Dockerfile

fmt: $(STAMP)
	$(BIN)/ruff format service tests bench model_export clients/python
	$(BIN)/ruff check --fix service tests bench model_export clients/python

# Train on the recorded outcomes, calibrate, export to ONNX, verify parity.
model: $(STAMP)
	$(BIN)/python model_export/build.py --data $(DATA) --out model_export/bundle
	$(BIN)/tierroute calibrate --data $(DATA) --model-dir model_export/bundle --max-cost-per-query 0.3333x \
		--out model_export/bundle/thresholds.json --report model_export/calibration_slices.json \
		--workers 2 --quiet

# Replay every record of the data through every strategy; writes out/eval/report.json and the plot.
eval: $(STAMP)
	$(BIN)/tierroute eval --data $(DATA) --out out/eval --workers 2

bench: $(STAMP)
	$(BIN)/python bench/route_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
