#!/bin/sh
# Mutation testing of one target with mutmut 2's own runner (configuration: setup.cfg [mutmut]).
# Each target is one source file and the tests that must kill its mutants; what each guards and the
# reasons of the surviving mutants are in docs/contributing/mutation.md. `benchmarks/mutation.sh --help`
# says how to run it.
set -eu
cd "$(dirname "$0")/.."
usage() {
    cat <<'USAGE'
usage: benchmarks/mutation.sh TARGET                  mutation-test one target
       benchmarks/mutation.sh TARGET MUTMUT-COMMAND...  e.g. `jobs results`, `jobs show 17`: a mutmut
                                                      command on that target's cache (.mutmut-cache.TARGET)
       benchmarks/mutation.sh -h | --help             this text

A target is one source file of epyclab/ and the tests that must kill its mutants (small bugs
planted one at a time). Run from a checkout with no uncommitted change under epyclab/ (mutmut
writes each mutant into the file), one target at a time, under nice. Rough times on 2 shared
cores: jobs was measured with this script; the others are estimates, not measurements: the
previous driver's time for the target plus about 3 s per mutant (what mutmut's runner added
for jobs), more where the whole file now has more mutants than the old subset (">").

  target     file                          time
  journal    epyclab/notebooks/journal.py   ~6 min
  undo       epyclab/notebooks/undo.py      ~10 min
  locks      epyclab/notebooks/locks.py     ~16 min
  kinds      epyclab/notebooks/kinds.py     >15 min
  lab        epyclab/labs/lab.py            ~10 min
  scheduler  epyclab/labs/transports/scheduler.py  >30 min  (its fork tests are slow)
  jobs       epyclab/labs/remote/jobs.py        9.4 min  (measured: 159 mutants)
  collect    epyclab/labs/remote/collect.py     >15 min  (starts real ipyparallel clusters)
  cli        epyclab/cli.py                 >10 min

Exit status: mutmut's (0 every mutant killed; non-zero: survivors or suspicious mutants, see
`benchmarks/mutation.sh TARGET results`); 2 for a missing or unknown target or a dirty epyclab/.
USAGE
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
target=$1
shift
case "$target" in
    journal) src=epyclab/notebooks/journal.py; tests="tests/test_journal_records.py tests/test_journal_mutants.py" ;;
    undo) src=epyclab/notebooks/undo.py; tests="tests/test_undo_log.py tests/test_undo_mutants.py" ;;
    locks) src=epyclab/notebooks/locks.py; tests="tests/test_notebook_locks.py tests/test_locks_mutants.py" ;;
    kinds) src=epyclab/notebooks/kinds.py; tests="tests/test_kinds_mutants.py" ;;
    lab) src=epyclab/labs/lab.py
        tests="tests/test_lab_commit_loop.py tests/test_lab.py tests/test_lab_mutants.py tests/test_create_with.py tests/test_interrupts.py" ;;
    scheduler) src=epyclab/labs/transports/scheduler.py
        tests="tests/test_chunk_sizes.py tests/test_parallel_units.py tests/test_parallel_retry_mutants.py tests/test_parallel_fork.py" ;;
    jobs) src=epyclab/labs/remote/jobs.py; tests="tests/test_job_ids.py tests/test_jobs_mutants.py" ;;
    collect) src=epyclab/labs/remote/collect.py; tests="tests/test_collect_decisions.py tests/test_collect_mutants.py" ;;
    cli) src=epyclab/cli.py
        tests="tests/test_cli_copy_mutants.py tests/test_copy_reads_sources_only.py tests/test_cli_notebooks.py" ;;
    *) echo "benchmarks/mutation.sh: no target $target" >&2; usage >&2; exit 2 ;;
esac
# One cache per target: .mutmut-cache holds the baseline time of the tests and each mutant's fate.
cache=".mutmut-cache.$target"
if [ "$#" -gt 0 ]; then
    # A mutmut command (results, show ID, apply ID, junitxml) on this target's cache, put back after.
    if [ ! -e "$cache" ]; then
        echo "benchmarks/mutation.sh: no $cache: run benchmarks/mutation.sh $target first" >&2
        exit 2
    fi
    mv "$cache" .mutmut-cache
    trap 'mv .mutmut-cache "$cache"' EXIT
    mutmut "$@"
    exit
fi
# mutmut writes each mutant into the source file itself: start from committed code, so that a run
# killed half-way is undone by `git checkout epyclab/`.
if ! git diff --quiet -- epyclab/; then
    echo "benchmarks/mutation.sh: epyclab/ has uncommitted changes: commit or stash them first" >&2
    exit 2
fi
if [ -e "$cache" ]; then mv "$cache" .mutmut-cache; else rm -f .mutmut-cache; fi
trap 'if [ -e .mutmut-cache ]; then mv .mutmut-cache "$cache"; fi' EXIT
status=0
HYPOTHESIS_PROFILE=mutation mutmut run --paths-to-mutate "$src" --no-progress \
    --runner "python -m pytest -x -q -p no:cacheprovider -o addopts= $tests" || status=$?
mutmut results || true
git diff --quiet -- epyclab/ || echo "benchmarks/mutation.sh: a mutant is left in epyclab/: git checkout epyclab/" >&2
exit "$status"
