#!/usr/bin/env bash
# manage.sh: a thin wrapper over `comfy-rs manage ACTION ...` (the logic lives in crates/cli;
# `install-frontend` runs scripts/install-frontend.sh).
#
#   ./manage.sh --action NAME [options]     ./manage.sh --help     ./manage.sh --action NAME --help
#
# Uses $COMFY_RS_BIN when set; otherwise target/release/comfy-rs (under $CARGO_TARGET_DIR when
# set), built with `cargo build --release` on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ACTIONS="start stop restart status logs gpu-info download-models list-models import-workflow execute-workflow demo install-frontend"

usage() {
  cat <<'USAGE'
Usage: ./manage.sh --action NAME [options]

Server:
  start              start the server in the background (--port, --listen, --base-directory,
                     other server flags passed through); waits until it answers
  stop               stop it (SIGTERM, then SIGKILL after --timeout seconds)
  restart            stop, then start again with the same flags
  status             running?, version, address, device, queue, models, free disk
  logs               print the server log (-n LINES, --follow)
  gpu-info           NVIDIA GPUs via nvidia-smi, else CPU and RAM

Models:
  download-models    fetch SDXL base 1.0 + SDXL VAE from Hugging Face (--model REPO:FILE[:FOLDER])
  list-models        every model folder with sizes and checkpoint architectures
  demo               write a tiny random-weight checkpoint into models/checkpoints

Workflows:
  import-workflow    --workflow FILE: validate (API or editor format) and save to user/default/workflows
  execute-workflow   --workflow FILE [--output DIR] [--server URL] [--timeout S]: run it, save images

Web editor:
  install-frontend   install the official ComfyUI editor (PyPI comfyui-frontend-package) into
                     web/frontend, served at / (--version V, default 1.28.9; --wheel FILE; --force)

Run ./manage.sh --action NAME --help for the options of one action.
Environment: COMFY_RS_BIN (binary to use), HF_ENDPOINT, HF_TOKEN, HF_HOME (downloads).
USAGE
}

action=""
args=()
want_help=0
while [ $# -gt 0 ]; do
  case "$1" in
    --action)
      if [ $# -lt 2 ]; then
        echo "manage.sh: --action needs a value" >&2
        usage >&2
        exit 2
      fi
      action="$2"
      shift 2
      ;;
    --action=*)
      action="${1#--action=}"
      shift
      ;;
    -h|--help)
      want_help=1
      shift
      ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done

if [ -z "$action" ]; then
  if [ "$want_help" = 1 ]; then
    usage
    exit 0
  fi
  echo "manage.sh: missing --action" >&2
  usage >&2
  exit 2
fi

case " $ACTIONS " in
  *" $action "*) ;;
  *)
    echo "manage.sh: unknown action '$action'" >&2
    usage >&2
    exit 2
    ;;
esac

if [ "$want_help" = 1 ]; then
  args=("--help")
fi

# install-frontend is a shell script of its own (pip download + unzip; no binary needed).
if [ "$action" = "install-frontend" ]; then
  exec bash "$ROOT/scripts/install-frontend.sh" ${args[@]+"${args[@]}"}
fi

bin="${COMFY_RS_BIN:-}"
if [ -z "$bin" ]; then
  bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/comfy-rs"
  if [ ! -x "$bin" ]; then
    echo "manage.sh: building comfy-rs (cargo build --release; first use only, takes a while)..." >&2
    (cd "$ROOT" && cargo build --release --bin comfy-rs) >&2
  fi
fi
if [ ! -x "$bin" ]; then
  echo "manage.sh: cannot run $bin" >&2
  exit 1
fi

exec "$bin" manage "$action" ${args[@]+"${args[@]}"}
