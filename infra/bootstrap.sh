#!/usr/bin/env bash
# Installs everything UIG needs into the project folder, once:
#   .venv/   Python 3.11 virtualenv with the pinned set from requirements.lock
#   .jars/   Delta Lake JVM jars resolved from Maven Central (Spark loads them from here), and
#            uig-local-fs.jar, Hadoop's local file system without a process per file (infra/local-fs)
# Re-running is cheap: each step is skipped while its input file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${UIG_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
UV_VERSION="0.13.8"

say() { printf '[bootstrap] %s\n' "$*" >&2; }

stamp_ok() {  # stamp_ok STAMP INPUT... : true when STAMP records the inputs' current hash
  local stamp="$1"; shift
  [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$(cat "$@" | sha256sum | cut -d' ' -f1)" ]]
}
write_stamp() { local stamp="$1"; shift; cat "$@" | sha256sum | cut -d' ' -f1 >"$stamp"; }

# 1. Python environment -------------------------------------------------------------
if ! stamp_ok .venv/.uig-installed requirements.lock pyproject.toml; then
  if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv with $($PY --version)"
    "$PY" -m venv .venv
  fi
  if ! .venv/bin/python -m uv --version 2>/dev/null | grep -q "$UV_VERSION"; then
    say "installing uv $UV_VERSION (fast, parallel installer)"
    .venv/bin/python -m pip install -q "uv==$UV_VERSION"
  fi
  say "installing the pinned dependency set (first run downloads ~4 GB: torch is a CUDA build)"
  .venv/bin/python -m uv pip install --python .venv/bin/python -r requirements.lock
  say "installing recbole 1.2.1 without dependencies (only its MovieLens-100k files are used)"
  .venv/bin/python -m uv pip install --python .venv/bin/python --no-deps "recbole==1.2.1"
  say "installing uig itself (editable)"
  .venv/bin/python -m uv pip install --python .venv/bin/python --no-deps -e .
  write_stamp .venv/.uig-installed requirements.lock pyproject.toml
else
  say ".venv is up to date"
fi

# 2. Delta Lake jars ------------------------------------------------------------------
if ! stamp_ok .jars/.uig-resolved infra/jars/pom.xml; then
  command -v mvn >/dev/null || { say "Maven (mvn) is required to resolve the Delta jars"; exit 1; }
  say "resolving Delta Lake jars from Maven Central into .jars/"
  rm -rf .jars && mkdir -p .jars
  mvn -q -B -f infra/jars/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$ROOT/.jars"
  write_stamp .jars/.uig-resolved infra/jars/pom.xml
else
  say ".jars is up to date"
fi

# 3. The local file system without process forks --------------------------------------
# Compiled against the Hadoop that ships inside pyspark (so its version always matches).
HADOOP_API=$(ls .venv/lib/python*/site-packages/pyspark/jars/hadoop-client-api-*.jar)
LOCAL_FS_SOURCES=(infra/local-fs/uig/hadoop/*.java)
if [[ ! -f .jars/uig-local-fs.jar ]] || ! stamp_ok .jars/.uig-local-fs "$HADOOP_API" "${LOCAL_FS_SOURCES[@]}"; then
  rm -f .jars/uig-local-fs.jar .jars/.uig-local-fs  # never a jar built against another Hadoop
  build=$(mktemp -d)
  if command -v javac >/dev/null && javac --release 17 -nowarn -cp "$HADOOP_API" -d "$build" "${LOCAL_FS_SOURCES[@]}"; then
    jar cf .jars/uig-local-fs.jar -C "$build" .
    write_stamp .jars/.uig-local-fs "$HADOOP_API" "${LOCAL_FS_SOURCES[@]}"
    say "compiled infra/local-fs into .jars/uig-local-fs.jar"
  else
    say "WARNING: no JDK 17 javac: Spark keeps Hadoop's own local file system (a chmod or readlink process per file: slower)"
  fi
  rm -rf "$build"
fi
say "ready: $(ls .jars/*.jar | wc -l) jars in .jars/, python $(.venv/bin/python --version)"
