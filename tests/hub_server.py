"""A small local HTTP server that speaks the part of the Hugging Face Hub API a dataset push uses:
create a repo, validate the card's YAML, ask the upload mode of each file (it answers "regular": the bytes travel inside the
commit), and commit. It keeps what was committed and every request it saw, so a test can rebuild the
repository from the server's side and check headers. Faults are real HTTP answers: ``fail`` maps an
endpoint to a list of status codes returned before it succeeds; ``token`` is the only accepted one."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def card_errors(content: str) -> list[str]:
    """What the Hub would refuse in a dataset card's YAML: no front matter, configs without a name or
    data files, no license."""
    import yaml

    if not content.startswith("---"):
        return ["no YAML front matter"]
    meta = yaml.safe_load(content.split("---")[1]) or {}
    errors = [] if meta.get("license") else ["license is missing"]
    for c in meta.get("configs", []):
        if not c.get("config_name") or not c.get("data_files"):
            errors.append(f"config {c!r} needs config_name and data_files")
    return errors


class Hub:
    def __init__(self, token: str, fail: dict[str, list[int]] | None = None):
        self.token, self.fail = token, {k: list(v) for k, v in (fail or {}).items()}
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [msg]}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code: int, body: dict | None = None):
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = ("create" if self.path.startswith("/api/repos/create") else
                        "validate-yaml" if self.path.startswith("/api/validate-yaml") else
                        "preupload" if "/preupload/" in self.path else "commit" if "/commit/" in self.path else "other")
                hub.requests.append({"method": "POST", "path": self.path, "kind": kind,
                                     "authorization": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                if hub.fail.get(kind):
                    return self._reply(hub.fail[kind].pop(0), {"error": "injected fault"})
                if kind == "validate-yaml":  # the card's front matter, checked as the Hub does before upload
                    errors = card_errors(json.loads(body)["content"])
                    return self._reply(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})
                if kind == "create":
                    req = json.loads(body)
                    repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    if req.get("type") != "dataset":
                        return self._reply(400, {"error": f"expected a dataset repo, got {req.get('type')}"})
                    if repo_id in hub.repos:
                        return self._reply(409, {"error": "You already created this dataset repo", "url": self._url(repo_id)})
                    hub.repos[repo_id] = {"private": req.get("visibility") == "private" or bool(req.get("private")), "files": {}, "commits": []}
                    return self._reply(200, {"url": self._url(repo_id), "name": repo_id})
                repo_id = self.path.split("/api/datasets/", 1)[1].split(f"/{kind}/", 1)[0]
                if repo_id not in hub.repos:
                    return self._reply(404, {"error": "Repository not found"})
                if kind == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                       for f in files]})
                if kind == "commit":
                    repo = hub.repos[repo_id]
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "header":
                            repo["commits"].append(item["value"]["summary"])
                        elif item["key"] == "file" and item["value"].get("encoding") == "base64":
                            repo["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        else:
                            return self._reply(400, {"error": f"unsupported commit item {item['key']} (this server takes regular files only)"})
                    oid = f"{len(repo['commits']):040x}"
                    return self._reply(200, {"commitUrl": f"{self._url(repo_id)}/commit/{oid}", "commitOid": oid})
                return self._reply(404, {"error": "unknown endpoint"})

            def _url(self, repo_id: str) -> str:
                return f"http://{self.headers['Host']}/datasets/{repo_id}"

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def checkout(self, repo_id: str, folder: Path) -> Path:
        """The repository as committed, written to a folder (what a clone would hold)."""
        for path, data in self.repos[repo_id]["files"].items():
            p = folder / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return folder
