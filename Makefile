# One entry point for people and CI. `make run` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/tierroute/v1/*.proto)
GEN_OUT := service
CLIENT_GEN_OUT := clients/python/src/tierroute_client/v1
DATA ?= $(or $(TIERROUTE_DATA),../shared/data/dev.jsonl.gz)
HOST ?= 127.0.0.1
PORT ?= 50051

.PHONY: venv install protos protos-check run test node-test check fmt model bench eval clean own-traffic-curve

# The server and the client install in one resolver run: the client's grpcio and protobuf
# ranges meet the root's pins, and neither install has to come first.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev]' -e clients/python
	touch $(STAMP)

venv install: $(STAMP)

# protoc writing its four outputs under $(1). Output paths mirror the proto package, so the
# server's code (under $(GEN_OUT)) is this output as it is and its imports need no rewriting.
protoc = PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$(1) \
	--mypy_out=$(1) --grpc_python_out=$(1) --mypy_grpc_out=$(1) $(PROTO_SRC)

# The client's copy, written to $(1): the same protoc run (-Iprotos, so its descriptors match
# the server's byte for byte and both copies load in one process), its `from tierroute.v1
# import` made relative and its messages' module name the client's, so the client needs no
# server package. (protoletariat does this import rewrite, but its release needs protobuf<6.)
# An import of the tierroute package left after the rewrite fails the run.
client_stubs = ( gen=$$(mktemp -d) && trap 'rm -rf "$$gen"' EXIT && \
	$(call protoc,$$gen) && mkdir -p $(1) && \
	rm -f $(1)/*_pb2.py $(1)/*_pb2.pyi $(1)/*_pb2_grpc.py $(1)/*_pb2_grpc.pyi && \
	for f in $$gen/tierroute/v1/*_pb2*.py*; do \
		sed -e 's/^from tierroute\.v1 import /from . import /' \
			-e "s/(DESCRIPTOR, 'tierroute\.v1\./(DESCRIPTOR, 'tierroute_client.v1./" \
			"$$f" > $(1)/$$(basename "$$f") || exit 1; \
	done && \
	if grep -nE '^ *(from|import) tierroute([. ]|$$)' $(1)/*.py $(1)/*.pyi; then \
		echo "$(1) still imports the tierroute package: extend client_stubs"; exit 1; fi )

# Regenerate Python code from the contract: the server's, and the client's copy of it.
protos: $(STAMP)
	$(call protoc,$(GEN_OUT))
	$(call client_stubs,$(CLIENT_GEN_OUT))
	cd protos && ../$(BIN)/buf lint

# Fails when the committed generated code (the server's or the client's) differs from what the
# protos produce, when a committed client stub has no proto left, or when protoc fails.
protos-check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && mkdir "$$tmp/server" && \
	$(call protoc,$$tmp/server) && $(call client_stubs,$$tmp/client) && \
	for f in $$(cd $$tmp/server && find . -name '*.py*' -type f); do \
		cmp -s $$tmp/server/$$f $(GEN_OUT)/$$f || { echo "generated code is stale: $(GEN_OUT)/$$f (run make protos)"; exit 1; }; \
	done && \
	for f in $$(cd $$tmp/client && ls); do \
		cmp -s $$tmp/client/$$f $(CLIENT_GEN_OUT)/$$f || { echo "generated code is stale: $(CLIENT_GEN_OUT)/$$f (run make protos)"; exit 1; }; \
	done && \
	for f in $(CLIENT_GEN_OUT)/*_pb2*.py*; do \
		test -e $$tmp/client/$$(basename $$f) || { echo "generated code is stale: $$f has no proto (run make protos)"; exit 1; }; \
	done && echo "generated code matches protos"
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
	$(BIN)/lint-imports
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

# The own-traffic learning curve (docs/own-traffic.md): labels from the replay judge only.
own-traffic-curve: $(STAMP)
	$(BIN)/python bench/own_traffic_curve.py --data $(DATA)

bench: $(STAMP)
	$(BIN)/python bench/route_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
