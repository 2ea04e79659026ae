#!/usr/bin/env python3
"""ComfyUI client flow with `requests`: submit EmptyImage -> ImageBlur -> SaveImage,
poll /history/{id}, download the image via /view. Usage: flow_requests.py http://127.0.0.1:PORT OUT.png"""
import sys
import time

import requests

base, out_path = sys.argv[1], sys.argv[2]
prompt = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 255}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 2, "sigma": 1.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "py_flow"}},
}
r = requests.post(f"{base}/prompt", json={"prompt": prompt, "client_id": "python-client"})
r.raise_for_status()
prompt_id = r.json()["prompt_id"]

deadline = time.time() + 120
while True:
    h = requests.get(f"{base}/history/{prompt_id}").json()
    if prompt_id in h:
        entry = h[prompt_id]
        break
    if time.time() > deadline:
        sys.exit("timed out waiting for history")
    time.sleep(0.05)

assert entry["status"]["status_str"] == "success", entry["status"]
image = entry["outputs"]["3"]["images"][0]
img = requests.get(f"{base}/view", params={"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]})
img.raise_for_status()
assert img.headers["Content-Type"].startswith("image/png"), img.headers
assert img.content[:8] == b"\x89PNG\r\n\x1a\n"
with open(out_path, "wb") as f:
    f.write(img.content)
print(f"OK {prompt_id} {image['filename']} {len(img.content)}")
