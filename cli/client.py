"""A small REST client for the gateway, used by the demo, the CLI and the tests."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from ssdstack.model_store import sha256_file


class ApiError(RuntimeError):
    def __init__(self, status: int, body: dict | str):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('message', body)}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60):
        self.http = httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def get(self, path: str, **params) -> dict:
        return self._check(self.http.get(path, params=params))

    def upload_dataset(self, archive: Path, name: str, format: str = "auto", timeout: float = 3600) -> dict:
        """Upload ``archive`` as dataset ``name`` and wait for its ingest job: the ready
        dataset's description; ApiError with the job's error when the ingest failed."""
        with open(archive, "rb") as handle:
            job = self._check(self.http.post("/v1/datasets", params={"name": name, "format": format}, content=handle,
                                             headers={"Content-Type": "application/zip"}))
        ended = self.wait(job["id"], timeout)
        if ended["state"] != "succeeded":
            raise ApiError(400 if ended.get("error") else 500, {"error": ended.get("error") or {
                "message": f"the ingest job {ended['state']}"}})
        return self.get(f"/v1/datasets/{name}")

    def upload_checkpoint(self, checkpoint: Path, name: str | None = None) -> dict:
        with open(checkpoint, "rb") as handle:
            return self._check(self.http.put(f"/v1/checkpoints/{name or Path(checkpoint).name}", content=handle,
                                             headers={"Content-Type": "application/octet-stream"}))

    def submit(self, spec: dict, idempotency_key: str | None = None) -> dict:
        """Submit a job; with ``idempotency_key``, submitting again gives the same job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._check(self.http.post("/v1/jobs", json=spec, headers=headers))

    def job(self, job_id: str) -> dict:
        return self.get(f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._check(self.http.delete(f"/v1/jobs/{job_id}"))

    def deploy(self, name: str, version: int, precision: str = "fp32") -> dict:
        return self._check(self.http.post(f"/v1/models/{name}/versions/{version}/deploy",
                                          params={"precision": precision}))

    def pull(self, name: str, version: int, folder: Path) -> dict[str, str]:
        """Download every artefact of the version into ``folder``, with its manifest.json:
        a file already there whole is kept, one cut short (``<file>.part``) resumes with a
        Range request, each is checked against the manifest's sha256 before it takes its
        name. ``{file: "kept" | "downloaded" | "resumed"}``; ApiError on a checksum mismatch
        (the partial file is removed: pull again)."""
        manifest = self.get(f"/v1/models/{name}/versions/{version}")
        root = Path(folder).resolve()
        outcome = {}
        for entry in manifest["artefacts"].values():
            target = (root / entry["file"]).resolve()
            if not target.is_relative_to(root):
                raise ApiError(502, f"the manifest names a file outside the version: {entry['file']!r}")
            if target.exists() and target.stat().st_size == entry["bytes"] and sha256_file(target) == entry["sha256"]:
                outcome[entry["file"]] = "kept"
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            outcome[entry["file"]] = self._fetch(f"/v1/models/{name}/versions/{version}/artefacts/{entry['file']}",
                                                 part, entry["bytes"])
            if sha256_file(part) != entry["sha256"]:
                part.unlink()
                raise ApiError(502, f"{entry['file']}: its sha256 differs from the manifest's; the partial file was "
                                    "removed, pull again")
            part.replace(target)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return outcome

    def _fetch(self, url: str, part: Path, size: int) -> str:
        """Bring ``part`` to ``size`` bytes from ``url``, resuming what it holds."""
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            return "resumed"
        with self.http.stream("GET", url, headers={"Range": f"bytes={have}-"} if have else None) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            resumed = response.status_code == 206
            with open(part, "ab" if resumed else "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        return "resumed" if resumed else "downloaded"

    def detect(self, image: bytes, filename: str = "image.jpg", **params) -> dict:
        params = {k: v for k, v in params.items() if v is not None}
        return self._check(self.http.post("/v1/detect", params=params, files={"file": (filename, image)}))

    def wait(self, job_id: str, timeout: float, on_update=None, interval: float = 1.0) -> dict:
        """Poll until the job is finished (bounded by ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s: {job['progress']}")
            time.sleep(interval)
