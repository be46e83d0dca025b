# The README's commands. `make test` is what CI runs (after .ci/run's installs).
PY ?= python3
SMG_VENV ?= /opt/sgl-gen-smg
SGLANG_VENVS ?= /opt/sgl-gen-sglang

.PHONY: test deps lint typecheck pytest outcheck golden golden-add router-catalogs sglang-catalog bench bench-deploy \
	bench-supervise bench-rollout bench-containers

test: deps lint typecheck pytest outcheck

deps:
	bash .ci/install.sh

lint:
	$(PY) -m ruff check generator tests

typecheck:
	$(PY) -m mypy generator

pytest:
	SGLGEN_STRICT=1 SGLGEN_SMG_PYTHON=$(SMG_VENV)/bin/python SGLGEN_SGLANG_VENVS=$(SGLANG_VENVS) \
	SGLGEN_SGLANG_WHEEL="$(firstword $(wildcard $(CURDIR)/.cache/wheels/sglang-0.5.23-*.whl))" \
	$(PY) -m pytest -q

# committed renders of every example must match a fresh render
outcheck:
	$(PY) -m generator.devtools.golden check

# refresh out/ after an intended change (review the diff before committing)
golden:
	$(PY) -m generator.devtools.golden refresh

# add the golden render of a new example: make golden-add EXAMPLE=examples/x.yaml
golden-add:
	$(PY) -m generator.devtools.golden add $(EXAMPLE)

# add (or refresh) the ServerArgs catalog of an SGLang version from its own live parser:
# make sglang-catalog VERSION=0.4.10.post2 (needs .ci/sglang-parser-$(VERSION).txt; see README)
sglang-catalog:
	test -n "$(VERSION)" || { echo "usage: make sglang-catalog VERSION=x.y.z" >&2; exit 2; }
	PATH="$(CURDIR)/tests/standins:$$PATH" "$$(bash .ci/sglang-venv.sh $(VERSION) $(SGLANG_VENVS))" \
	  tests/realsglang/dump_catalog.py > schemas/sglang-$(VERSION).json.tmp
	mv schemas/sglang-$(VERSION).json.tmp schemas/sglang-$(VERSION).json

# re-dump the router catalogs from the installed parsers (sglang-router here, smg in its venv)
router-catalogs:
	$(PY) generator/devtools/argdump.py sglang_router.router_args:RouterArgs sglang-router > schemas/routers/sglang-router-0.3.2.json
	$(SMG_VENV)/bin/python generator/devtools/argdump.py smg.router_args:RouterArgs smg > schemas/routers/smg-1.13.0.json

# render benchmark: 64 / 512 / 8,192 GPUs; prints wall time, peak memory, ratio to bare Jinja
bench:
	$(PY) tests/bench_render.py

# deploy benchmark (root; real sshd hosts in network namespaces): 1 vs 8 hosts, no-op redeploy,
# and the same deployment by an Ansible playbook; ansible-core goes into its own venv
ANSIBLE_VENV ?= $(CURDIR)/.cache/ansible-venv
bench-deploy:
	test -x $(ANSIBLE_VENV)/bin/ansible-playbook || \
	  { $(PY) -m venv $(ANSIBLE_VENV) && $(ANSIBLE_VENV)/bin/pip install -q 'ansible-core==2.19.*'; }
	$(PY) tests/bench_deploy.py --ansible-playbook $(ANSIBLE_VENV)/bin/ansible-playbook

# supervision benchmark (root; four real systemd hosts): deploy under systemd vs the bash
# launcher, SIGKILL -> healthy again, poweroff -> healthy after boot
bench-supervise:
	$(PY) tests/bench_supervise.py

# rolling-deploy benchmark (root; real sshd hosts in network namespaces): 16 rehearsal engines of
# one model with a 5 s startup delay; a change of defaults rolled out with --max-unavailable 1, 4
# and 50% and with --allow-downtime under a constant load; wall time vs ideal, requests failed
bench-rollout:
	$(PY) tests/bench_rollout.py

# container start overhead (root; podman and the local test image): the rehearsal engine to its
# first /health by the host's python3 and by `podman run` with the unit scripts' flags
bench-containers:
	SGLGEN_ROOTFS_CACHE="$${SGLGEN_ROOTFS_CACHE:-/var/cache/sgl-gen}" $(PY) tests/bench_containers.py
