# dnx: two commands do all set-up on a fresh machine:
#   make demo   - install everything and build ./model_repository offline (random weights)
#   make test   - install everything and run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
REPO   ?= model_repository
CALIB_DIR ?=   # empty: INT8 calibrates on scikit-image's bundled photographs (a demo, flagged as such)
PYTEST_ARGS ?=
# TORCH=cpu installs the CPU-only torch build from PyTorch's CPU wheel index (a far smaller .venv);
# unset, pip takes torch from the default index (on Linux x86-64 the CUDA build, with its libraries).
# Switching later needs `make clean` first (the .venv is reused while it is complete).
TORCH ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(TORCH),cpu)
TORCH_PIP = $(BIN)/pip install -q -c constraints.txt --index-url $(TORCH_CPU_INDEX) torch torchvision
else ifneq ($(TORCH),)
$(error TORCH=$(TORCH) is not a choice: use TORCH=cpu, or leave TORCH unset for the default build)
endif

.PHONY: install demo serve test test-fast bench tune engines lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(TORCH_PIP)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $@

demo: install
	$(BIN)/dnx export --weights random --target cpu --out $(REPO) \
	    --precision fp32 --precision bf16 --precision int8 $(if $(strip $(CALIB_DIR)),--calib-dir $(CALIB_DIR))

serve: install
	$(BIN)/dnx serve --repository $(REPO)

test: install
	$(BIN)/ruff check .
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
