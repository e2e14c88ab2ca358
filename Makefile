# gpreempt-trace — `make demo` runs the main job, `make test` runs the tests; both set up first.
VENV   := .venv
PY     := $(VENV)/bin/python
SETUP  := $(VENV)/.setup-done

.PHONY: setup demo demo-lab test test-fast bench soak soak-lab lab kernel-check kernel-sources docs codegen lint clean spark-check lab-scheme-b

$(SETUP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(SETUP)

demo: $(SETUP)
	$(VENV)/bin/gpreempt-trace demo

# experiment ab inside the Debian 6.12 QEMU lab (real KFD, scheme A; TCG times, not hardware numbers).
# Cost: first use builds the 6.12 lab (downloads, minutes); then ~7 min idle, ~25 min on a loaded 2-core VM
# (docs/experiment.md). Scheme B runs where `make lab-scheme-b` built the patched amdgpu.ko, else it is refused.
demo-lab: $(SETUP)
	nice -n 10 $(VENV)/bin/gpreempt-trace experiment ab --lab --online gemm --offline gemm --schemes none,A,B \
		--backend numpy --duration 5 --rate 2 --batch 1 -o out/demo-lab

test: $(SETUP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# everything but the QEMU lab and the kernel build
test-fast: $(SETUP)
	$(PY) -m pytest -q -ra -m "not lab and not kernel" $(PYTEST_ARGS)

bench: $(SETUP)
	$(PY) -m bench

# the soak, short version (10x fewer than the long one) on this machine: controller cycles (fds/RSS/threads
# first vs last tenth), seeded SIGKILL/SIGSTOP runs, record start/stop leaks, experiment ab --repeat accounting
# (~5 min; root). The long version: python -m bench.soak --long; in the 6.12 lab: make soak-lab (docs/controller.md)
soak: $(SETUP)
	$(PY) -m bench.soak

# the controller parts against the real KFD in the Debian 6.12 QEMU lab (scheme B where the patched amdgpu.ko is built);
# the kill runs fork their controllers (a Python start takes 10-30 s under TCG); sized runs: --kill-budget S
soak-lab: $(SETUP)
	$(PY) -m bench.soak --lab controller kill experiment

lab: $(SETUP)
	$(PY) -m gpreempt_trace.lab build --kernel all

# scheme B in the 6.12 lab: the patched amdgpu.ko (kernel/ series) and its ptrace_may_access shim, which
# soak-lab, experiment ab --lab and the lab tests load instead of Debian's module (~10 min, first build longer)
lab-scheme-b: $(SETUP)
	GPT_KERNEL_MODULE=1 bash kernel/check.sh

kernel-check: $(SETUP)
	bash kernel/check.sh

# Debian's source + headers of the fixture kernels at their exact versions (sha256-pinned in
# tests/fixtures/kernels/<abi>/packages.sha256), for `btf build` against their real BTF (tests/test_btf_build.py)
kernel-sources: $(SETUP)
	$(PY) -m gpreempt_trace.lab.kernel_sources

docs: $(SETUP)
	$(PY) -m gpreempt_trace.codegen.docgen

codegen: $(SETUP)
	$(PY) -m gpreempt_trace.codegen.headers

clean:
	rm -rf $(VENV) .pytest_cache

# read a hive-style export with Spark (pyspark in its own venv; needs Java 17, ~300 MB download)
spark-check: $(SETUP)
	[ -x .cache/spark-venv/bin/python ] || (/usr/bin/python3 -m venv .cache/spark-venv && .cache/spark-venv/bin/pip install -q pyspark)
	rm -rf .cache/spark-runs && $(PY) -m gpreempt_trace.synthetic.runs .cache/spark-runs
	.cache/spark-venv/bin/python scripts/spark_check.py .cache/spark-runs
