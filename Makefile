# Quick start: `make demo` (set up, build + train the demo shop, serve it on PORT), `make test`.
# `make movielens` prepares, ingests and trains MovieLens instead (no service).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= var/data
export RECSYS_DATABASE_URL ?= sqlite:///var/recsys.db

# The demo shop has its own catalog, so it does not mix with the MovieLens demo's.
SHOP_DATABASE_URL ?= sqlite:///var/shop.db
SHOP := $(BIN)/recsys --database-url $(SHOP_DATABASE_URL)

PORT ?= 8000
# The demo shop's prices are made up in euros (the page shows them in RECSYS_CURRENCY).
CURRENCY ?= EUR
SHOP_TRAINED := var/shop.trained

.PHONY: setup demo shop serve movielens test lint format clean

setup: $(VENV)/.installed
	@scripts/system_packages.sh

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev,spark,ray]"
	touch $@

# The README's main command: a fresh machine to a running shop with recommendations.
demo: shop serve

# Serve the demo shop with gunicorn (production settings, services/gunicorn.conf.py), its
# catalog first brought to the code's migrations (a shop built by older code would not serve).
serve: setup
	$(SHOP) db upgrade
	@echo "demo shop: http://127.0.0.1:$(PORT)/  (API: /v1, docs: /openapi.json; Ctrl-C stops)"
	RECSYS_DATABASE_URL=$(SHOP_DATABASE_URL) RECSYS_BIND=127.0.0.1:$(PORT) RECSYS_CURRENCY=$(CURRENCY) \
		$(BIN)/gunicorn -c services/gunicorn.conf.py "services.app:create_app()"

movielens: setup
	$(BIN)/recsys db upgrade
	$(BIN)/recsys datasets prepare movielens --out $(DATA)/movielens
	$(BIN)/recsys ingest items $(DATA)/movielens/items.csv
	$(BIN)/recsys ingest interactions $(DATA)/movielens/interactions.csv
	$(BIN)/recsys train
	$(BIN)/recsys stats
	@echo "Movies like Toy Story (item 1):"
	$(BIN)/recsys similar --item 1 -k 5

# Fashion-MNIST photos with simulated shoppers: prepare, ingest, train (a few minutes on 2 cores).
shop: setup $(SHOP_TRAINED)

$(SHOP_TRAINED): $(VENV)/.installed
	$(SHOP) db upgrade
	$(SHOP) datasets prepare fashion-shop --out $(DATA)/fashion-shop
	$(SHOP) ingest items $(DATA)/fashion-shop/items.csv
	$(SHOP) ingest interactions $(DATA)/fashion-shop/interactions.csv
	$(SHOP) train
	$(SHOP) stats
	@echo "Items like sku-009999, listed after the log ended (no interactions):"
	$(SHOP) similar --item sku-009999 -k 5
	touch $@

# Runs every test; catalog tests run on SQLite and on a throwaway PostgreSQL when one can start.
test: setup
	scripts/test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var reports .pytest_cache
