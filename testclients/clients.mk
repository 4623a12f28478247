# Real Kafka clients for internal/clientbed (see testclients/README.md).
#
#   make deps          install every test client, idempotently (`make test` runs it first)
#   make test-clients  run the client bed with every client required
#
# Each step does work only when it is missing or stale: apt-get runs only for
# a package that is not installed, the Python venv is rebuilt only when
# requirements.txt changes, `npm ci` runs only when package(-lock).json
# changed, and Maven builds the Java client only when its pom or sources did.

CLIENTS_DIR  := testclients
CLIENTS_PY   := $(CLIENTS_DIR)/python/.venv/.installed
CLIENTS_NODE := $(CLIENTS_DIR)/node/node_modules/.installed
CLIENTS_JAR  := $(CLIENTS_DIR)/java/target/testclient.jar
# The Debian interpreter builds the venv: it is the same on every machine of
# this kind, whatever pyenv puts first on PATH.
CLIENTS_PYTHON ?= /usr/bin/python3

CLIENTS_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# clients_apt is a shell snippet installing the Debian packages $(1) that
# dpkg does not already have.
clients_apt = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "deps: apt-get install$$missing"; \
	$(CLIENTS_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$(CLIENTS_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

.PHONY: deps deps-kcat deps-python deps-node deps-java test-clients

# Under `make test` every client is required: a missing one fails the
# client bed's tests instead of skipping them. (Target-specific variables
# reach every prerequisite that `test` builds, test-go included.)
test: export SWITCHYARD_REQUIRE_CLIENTS := 1

deps: deps-kcat deps-python deps-node deps-java

deps-kcat:
	@command -v kcat >/dev/null 2>&1 || { $(call clients_apt,kcat) ; }
	@command -v kcat >/dev/null 2>&1 || { echo "deps: kcat still missing"; exit 1; }

deps-python: $(CLIENTS_PY)
$(CLIENTS_PY): $(CLIENTS_DIR)/python/requirements.txt
	@$(CLIENTS_PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(call clients_apt,python3-venv) ; }
	rm -rf $(CLIENTS_DIR)/python/.venv
	$(CLIENTS_PYTHON) -m venv $(CLIENTS_DIR)/python/.venv
	$(CLIENTS_DIR)/python/.venv/bin/pip install --quiet --disable-pip-version-check -r $<
	$(CLIENTS_DIR)/python/.venv/bin/python -c 'import confluent_kafka as c; print("deps: confluent-kafka", c.version(), "librdkafka", c.libversion()[0])'
	@touch $@

deps-node: $(CLIENTS_NODE)
$(CLIENTS_NODE): $(CLIENTS_DIR)/node/package.json $(CLIENTS_DIR)/node/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { $(call clients_apt,nodejs npm) ; }
	cd $(CLIENTS_DIR)/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps-java: $(CLIENTS_JAR)
$(CLIENTS_JAR): $(CLIENTS_DIR)/java/pom.xml $(shell find $(CLIENTS_DIR)/java/src -type f 2>/dev/null)
	@command -v mvn >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 || { $(call clients_apt,openjdk-17-jdk-headless maven) ; }
	mvn -B -q -f $(CLIENTS_DIR)/java/pom.xml package
	@test -f $@ && ls $(CLIENTS_DIR)/java/target/lib/kafka-clients-*.jar >/dev/null
	@touch $@

test-clients: deps
	SWITCHYARD_REQUIRE_CLIENTS=1 $(GO) test -race -count=1 ./internal/clientbed/
