# The two commands of the README, plus a few conveniences. Each target installs what it needs.
.PHONY: demo test install bench airflow clean

install:
	bash infra/bootstrap.sh

demo: install
	.venv/bin/uig demo

test: install
	.venv/bin/python -m pytest

bench: install
	.venv/bin/python bench/ingest.py

airflow: install
	bash infra/airflow-standalone.sh

clean:
	rm -rf data .pytest_cache
