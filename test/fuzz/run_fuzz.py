#!/usr/bin/python3
"""Bounded libFuzzer run of the gateway's request parser, with a self-test.

Two checks, each printed as a pytest-style PASSED/FAILED line so that
test/run_all.py counts them:

  planted_crash_is_found  the same harness built with -DGW_FUZZ_PLANTED must
                          crash on the seed test/fuzz/planted (a checker is
                          tested against known-bad input: a fuzz run that
                          cannot notice a crash would prove nothing)
  request_parser_survives fuzz-bin/fuzz_ws_request runs for FUZZ_SECONDS
                          (default 45) from the seeds in test/fuzz/seeds with
                          no crash, leak or sanitizer report
  soap_reader_survives    fuzz-bin/fuzz_soap_request (the SOAP envelope
                          reader) the same way for FUZZ_SECONDS * 2 / 3, from
                          test/fuzz/soap_seeds with test/fuzz/soap.dict

The working corpus is a copy in test/results-fuzz/corpus (kept between runs
on one machine, never committed); a crashing input is kept there too.
Prints executions, executions per second and the corpus size at the end.

Usage: test/fuzz/run_fuzz.py [seconds]
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ADAPTERS = os.path.join(ROOT, "adapters")
OUT = os.path.join(ROOT, "test", "results-fuzz")


def build():
    r = subprocess.run(["make", "-s", "-C", ADAPTERS, "fuzz"], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        return False
    return True


def planted_crash_is_found():
    work = os.path.join(OUT, "planted")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    r = subprocess.run([os.path.join(ADAPTERS, "fuzz-bin", "fuzz_ws_request_planted"),
                        "-artifact_prefix=" + work + "/",
                        os.path.join(HERE, "planted")],
                       capture_output=True, text=True, timeout=120)
    crashed = r.returncode != 0 and "ERROR: AddressSanitizer" in r.stderr
    if not crashed:
        print(r.stderr[-3000:])
    # the real target must not crash on that input
    r2 = subprocess.run([os.path.join(ADAPTERS, "fuzz-bin", "fuzz_ws_request"),
                         os.path.join(HERE, "planted")], capture_output=True, text=True,
                        timeout=120)
    if r2.returncode != 0:
        print(r2.stderr[-3000:])
    return crashed and r2.returncode == 0


def survives(target, seeds, dictionary, corpus_name, seconds, max_len):
    corpus = os.path.join(OUT, corpus_name)
    os.makedirs(corpus, exist_ok=True)
    for name in os.listdir(os.path.join(HERE, seeds)):
        shutil.copy(os.path.join(HERE, seeds, name), os.path.join(corpus, "seed-" + name))
    args = [os.path.join(ADAPTERS, "fuzz-bin", target),
            "-max_total_time=%d" % seconds, "-max_len=%d" % max_len, "-timeout=10",
            "-rss_limit_mb=2048", "-print_final_stats=1",
            "-dict=" + os.path.join(HERE, dictionary),
            "-artifact_prefix=" + OUT + "/", corpus]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 300, env=env)
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", r.stderr)
    speed = re.search(r"stat::average_exec_per_sec:\s*(\d+)", r.stderr)
    size = len(os.listdir(corpus))
    print("fuzz %s: %s executions in %ds (%s/s), corpus %d inputs, exit %d"
          % (target, runs.group(1) if runs else "?", seconds, speed.group(1) if speed else "?",
             size, r.returncode))
    if r.returncode != 0:
        print(r.stderr[-6000:])
    return r.returncode == 0


def request_parser_survives(seconds):
    return survives("fuzz_ws_request", "seeds", "ws.dict", "corpus", seconds, 8192)


def soap_reader_survives(seconds):
    return survives("fuzz_soap_request", "soap_seeds", "soap.dict", "corpus-soap", seconds, 16384)


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("FUZZ_SECONDS", "45"))
    os.makedirs(OUT, exist_ok=True)
    if not build():
        print("test/fuzz/run_fuzz.py::build FAILED")
        return 1
    failed = 0
    for name, fn in (("planted_crash_is_found", planted_crash_is_found),
                     ("request_parser_survives", lambda: request_parser_survives(seconds)),
                     ("soap_reader_survives", lambda: soap_reader_survives(max(5, seconds * 2 // 3)))):
        ok = fn()
        failed += not ok
        print("test/fuzz/run_fuzz.py::%s %s" % (name, "PASSED" if ok else "FAILED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
