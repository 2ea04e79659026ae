#!/usr/bin/env bash
# install-frontend.sh: installs the official ComfyUI web editor (PyPI package
# `comfyui-frontend-package`, a wheel of static files) under web/frontend/.
#
#   scripts/install-frontend.sh [--version V] [--wheel FILE] [--dest DIR] [--force]
#
# The wheel is fetched with `pip download` (Python is needed only here, never at run time) and
# its `comfyui_frontend_package/static/` folder is unpacked to DEST (default: web/frontend
# next to this repository's manage.sh). The server serves DEST at `/` when it exists
# (or whatever `--front-end-root DIR` names).
#
# Default version: 1.28.9, a frontend that starts cleanly against this server: every
# route it calls is implemented (see docs in crates/server/src/routes/frontend.rs), and unlike
# 1.27.x its model-to-node registry skips loader classes that /object_info does not list (1.27.10
# throws when ImageOnlyCheckpointLoader, ControlNetLoader, UpscaleModelLoader, StyleModelLoader
# or GLIGENLoader are absent). tests/web_ui.rs drives this version in a browser.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_VERSION="1.28.9"
version="${COMFY_FRONTEND_VERSION:-$DEFAULT_VERSION}"
wheel=""
dest="$ROOT/web/frontend"
force=0

usage() {
  cat <<'USAGE'
Usage: install-frontend.sh [--version V] [--wheel FILE] [--dest DIR] [--force]

  --version V   comfyui-frontend-package version to download (default 1.28.9;
                env COMFY_FRONTEND_VERSION)
  --wheel FILE  install from an already downloaded wheel instead (no network)
  --dest DIR    where to install (default: <repo>/web/frontend)
  --force       reinstall even if DEST already holds this version
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --version) [ $# -ge 2 ] || { echo "install-frontend: --version needs a value" >&2; exit 2; }; version="$2"; shift 2 ;;
    --version=*) version="${1#--version=}"; shift ;;
    --wheel) [ $# -ge 2 ] || { echo "install-frontend: --wheel needs a value" >&2; exit 2; }; wheel="$2"; shift 2 ;;
    --wheel=*) wheel="${1#--wheel=}"; shift ;;
    --dest) [ $# -ge 2 ] || { echo "install-frontend: --dest needs a value" >&2; exit 2; }; dest="$2"; shift 2 ;;
    --dest=*) dest="${1#--dest=}"; shift ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-frontend: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

case "$version" in
  ''|*[!0-9A-Za-z.+-]*) echo "install-frontend: bad version '$version'" >&2; exit 2 ;;
esac

stamp="$dest/.comfyui-frontend-version"
if [ -z "$wheel" ] && [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ] && [ -f "$dest/index.html" ]; then
  echo "comfyui-frontend-package $version already installed in $dest"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -z "$wheel" ]; then
  py=""
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -m pip --version >/dev/null 2>&1; then py="$c"; break; fi
  done
  if [ -z "$py" ]; then
    echo "install-frontend: needs python3 with pip to download the wheel (or pass --wheel FILE)" >&2
    exit 1
  fi
  echo "downloading comfyui-frontend-package==$version ..."
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/dl" \
    "comfyui-frontend-package==$version" >&2
  wheel="$(ls "$work"/dl/comfyui_frontend_package-*.whl 2>/dev/null | head -n1)"
  [ -n "$wheel" ] || { echo "install-frontend: pip produced no wheel" >&2; exit 1; }
fi
[ -f "$wheel" ] || { echo "install-frontend: no such wheel: $wheel" >&2; exit 1; }

# The version written in the wheel's file name wins over --version (for --wheel installs).
base="$(basename "$wheel")"
wheel_version="$(printf '%s' "$base" | sed -n 's/^comfyui_frontend_package-\([^-]*\)-.*\.whl$/\1/p')"
[ -n "$wheel_version" ] && version="$wheel_version"

mkdir -p "$work/x"
if command -v unzip >/dev/null 2>&1; then
  unzip -q "$wheel" 'comfyui_frontend_package/static/*' -d "$work/x"
elif command -v python3 >/dev/null 2>&1; then
  python3 -m zipfile -e "$wheel" "$work/x"
elif command -v bsdtar >/dev/null 2>&1; then
  bsdtar -xf "$wheel" -C "$work/x"
else
  echo "install-frontend: needs unzip (or python3, or bsdtar) to unpack the wheel" >&2
  exit 1
fi
static="$work/x/comfyui_frontend_package/static"
[ -f "$static/index.html" ] || { echo "install-frontend: $wheel holds no static/index.html" >&2; exit 1; }

# Swap in atomically-ish: unpack next to DEST, then replace it.
mkdir -p "$(dirname "$dest")"
staging="$(mktemp -d "$(dirname "$dest")/.frontend-new.XXXXXX")"
cp -R "$static"/. "$staging"/
printf '%s\n' "$version" > "$staging/.comfyui-frontend-version"
chmod 755 "$staging"
if [ -e "$dest" ]; then
  old="$dest.old.$$"
  mv "$dest" "$old"
  mv "$staging" "$dest"
  rm -rf "$old"
else
  mv "$staging" "$dest"
fi
count="$(find "$dest" -type f | wc -l)"
echo "installed comfyui-frontend-package $version into $dest ($count files)"
