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

extension:
	bash scripts/build-extension.sh

# The long reliability runs (README "Reliability"): 20 worker SIGKILLs over >= 200 jobs, 20 runner kills.
chaos: setup
	CHAOS_FULL=1 npx jest --runInBand --forceExit test/integration/reliability-
