# dnx: two commands do all set-up on a fresh machine:
#   make demo   - install everything and build ./model_repository offline (random weights)
#   make test   - install everything and run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
REPO   ?= model_repository
CALIB_DIR ?= $(shell $(BIN)/python -c "import skimage.data, os; print(os.path.dirname(skimage.data.__file__))" 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: install demo serve test test-fast bench tune engines lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $@

demo: install
	$(BIN)/dnx export --weights random --target cpu --out $(REPO) \
	    --precision fp32 --precision bf16 --precision int8 \
	    --calib-dir $(CALIB_DIR) --calib-samples 32

serve: install
	$(BIN)/dnx serve --repository $(REPO)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/dnx bench --repository $(REPO) --notes perf/tuning.md

# Find the fastest served config on this machine and write it into $(REPO) (config.pbtxt.orig kept).
tune: install
	$(BIN)/dnx tune --repository $(REPO) $(TUNE_ARGS)

# TensorRT engines need an NVIDIA GPU host with Docker; plans and the server share one TensorRT.
TRT_IMAGE ?= nvcr.io/nvidia/tensorrt:26.03-py3
engines:
	docker build -f docker/Dockerfile.tensorrt --build-arg BASE=$(TRT_IMAGE) -t dnx-tensorrt .
	docker run --rm --gpus all -v $(CURDIR):/work -w /work dnx-tensorrt \
	    dnx export --target gpu --precision fp32 --precision fp16 --precision int8 --out $(REPO) $(EXPORT_ARGS)

clean:
	rm -rf $(VENV) .dnx-cache perf/results
