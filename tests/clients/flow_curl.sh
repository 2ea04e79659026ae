#!/usr/bin/env bash
# ComfyUI client flow with curl + jq: submit EmptyImage -> ImageBlur -> SaveImage,
# poll /history/{id} with `jq 'keys|length'`, download via /view.
# Usage: flow_curl.sh http://127.0.0.1:PORT OUT.png
set -euo pipefail
BASE="$1"; OUT="$2"
PROMPT='{"prompt": {
  "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 65280}},
  "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 0.5}},
  "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sh_flow"}}}}'
ID=$(curl -sf -X POST -H 'Content-Type: application/json' -d "$PROMPT" "$BASE/prompt" | jq -r .prompt_id)
[ -n "$ID" ] && [ "$ID" != null ] || { echo "no prompt_id" >&2; exit 1; }
for _ in $(seq 1 2400); do
  N=$(curl -sf "$BASE/history/$ID" | jq 'keys|length')
  [ "$N" = 1 ] && break
  sleep 0.05
done
[ "$N" = 1 ] || { echo "timed out waiting for history" >&2; exit 1; }
STATUS=$(curl -sf "$BASE/history/$ID" | jq -r ".[\"$ID\"].status.status_str")
[ "$STATUS" = success ] || { echo "status $STATUS" >&2; exit 1; }
COUNT=$(curl -sf "$BASE/history/$ID" | jq ".[\"$ID\"].outputs[\"3\"].images | length")
[ "$COUNT" = 2 ] || { echo "expected 2 images, got $COUNT" >&2; exit 1; }
FILE=$(curl -sf "$BASE/history/$ID" | jq -r ".[\"$ID\"].outputs[\"3\"].images[1].filename")
curl -sf -G "$BASE/view" --data-urlencode "filename=$FILE" --data-urlencode "type=output" --data-urlencode "subfolder=" -o "$OUT"
echo "OK $ID $FILE"
