# The two commands README promises: `make start` and `make test`. Both install what is missing first.
.PHONY: start test setup build bench extension chaos

setup:
	bash scripts/setup.sh start

start: setup
	node dist/cli.js start

test:
	bash scripts/setup.sh test
	bash scripts/test.sh

build:
	npm run build

bench: setup
	npm run bench
	@# pixelbench (docs/pixelize.md): BENCH_PIXEL=1 adds ours + baselines, PIXELBENCH_PEERS_PYTHON=<venv python> the peers
	@if [ -n "$$BENCH_PIXEL" ]; then .venv/bin/python bench/pixelbench.py $${PIXELBENCH_PEERS_PYTHON:+--peers-python "$$PIXELBENCH_PEERS_PYTHON"}; fi
	@# MLX quantized weights vs float32 (bench/results/mlx-quantize.json; the SD-1.5-sized UNet case takes minutes)
	@if [ -n "$$BENCH_QUANT" ]; then PYTHONPATH=python .venv/bin/python -m pixelai_runner.bench_quantize; fi
	@# the same LoRA job on torch and MLX (bench/results/mlx-lora.json)
	@if [ -n "$$BENCH_LORA" ]; then PYTHONPATH=python .venv/bin/python -m pixelai_runner.bench_lora; fi
	@# both engines warm holding an SD-1.5-sized model, without and with a memory budget (bench/results/warm-memory.json)
	@if [ -n "$$BENCH_WARM_MEMORY" ]; then node dist/bench/warm-memory.js; fi
	@# one job of 4 candidates vs 4 single jobs with the same seeds, both engines, tiny model (bench/results/candidates.json)
	@if [ -n "$$BENCH_CANDIDATES" ]; then node dist/bench/candidates.js; fi

extension:
	bash scripts/build-extension.sh

# The long reliability runs (README "Reliability"): 20 worker SIGKILLs over >= 200 jobs, 20 runner kills.
chaos: setup
	CHAOS_FULL=1 npx jest --runInBand --forceExit test/integration/reliability-
