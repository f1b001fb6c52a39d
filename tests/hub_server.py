"""A small local HTTP server that speaks the part of the Hugging Face Hub API a dataset push uses.

Create a repo, validate the card's YAML, answer the upload mode of each file, take LFS uploads, commit,
and tell a repo's head. ``lfs`` (default True) makes data files (``*.parquet``) go the Hub's way for
large files: preupload answers ``lfs``, the client's LFS batch request gets upload and verify URLs on
this server, the bytes arrive by PUT (checked against their sha256), and the commit names them by
pointer (``lfsFile``). Other files, and every file with ``lfs=False``, travel inside the commit
("regular"). Preupload also returns the oid of a file the repo already has, so the client skips
unchanged files, and the batch answer omits the upload of an object already stored: a rerun sends
only what is missing.

It keeps what was committed and every request it saw, so a test can rebuild the repository from the
server's side and check headers. Faults are real HTTP answers or real broken connections: ``fail``
maps a request kind to status codes returned before it succeeds; ``drop_puts`` closes that many LFS
uploads mid-body; ``hold_after_puts`` stalls every upload after that many (a push to kill midway);
``on_batch`` is called on each LFS batch request (a test changes a file there). ``token`` is the only
accepted one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
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


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    def __init__(self, token: str, fail: dict[str, list[int]] | None = None, lfs: bool = True, drop_puts: int = 0,
                 hold_after_puts: int | None = None, on_batch=None):
        self.token, self.fail = token, {k: list(v) for k, v in (fail or {}).items()}
        self.lfs, self.drop_puts, self.hold_after_puts, self.on_batch = lfs, drop_puts, hold_after_puts, on_batch
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}  # repo id -> {"private", "files": {path: bytes}, "lfs_paths", "commits"}
        self.objects: dict[str, bytes] = {}  # LFS store: sha256 -> bytes
        self.puts = 0
        self.release = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, code: int, body: dict | None = None):
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, method: str, kind: str) -> bool:
                hub.requests.append({"method": method, "path": self.path, "kind": kind,
                                     "authorization": self.headers.get("Authorization")})
                public = kind in ("lfs-put", "validate-yaml", "other")  # as on the Hub: no token needed there
                if not public and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                if hub.fail.get(kind):
                    self._reply(hub.fail[kind].pop(0), {"error": "injected fault"})
                    return False
                return True

            def do_GET(self):
                if "/revision/" not in self.path:
                    return self._reply(404, {"error": "unknown endpoint"}) if self._record("GET", "other") else None
                if not self._record("GET", "revision"):
                    return
                repo_id = self.path.split("/api/datasets/", 1)[1].split("/revision/", 1)[0]
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._reply(404, {"error": "Repository not found"})
                self._reply(200, {"id": repo_id, "sha": repo["head"], "private": repo["private"],
                                  "siblings": [{"rfilename": p} for p in repo["files"]]})

            def do_PUT(self):
                length = int(self.headers.get("Content-Length", 0))
                if not self.path.startswith("/lfs-upload/"):
                    self.rfile.read(length)
                    return self._reply(404, {"error": "unknown endpoint"}) if self._record("PUT", "other") else None
                hub.puts += 1
                if hub.hold_after_puts is not None and hub.puts > hub.hold_after_puts:
                    hub.release.wait(600)  # the client is killed meanwhile
                if hub.drop_puts > 0:
                    hub.drop_puts -= 1
                    hub.requests.append({"method": "PUT", "path": self.path, "kind": "lfs-put-dropped", "authorization": None})
                    self.rfile.read(length // 2)
                    self.close_connection = True
                    self.connection.close()  # mid-body, no answer
                    return
                data = self.rfile.read(length)
                if not self._record("PUT", "lfs-put"):
                    return
                oid = self.path.rsplit("/", 1)[1]
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._reply(400, {"error": f"sha256 mismatch: the uploaded bytes are not object {oid[:12]}"})
                hub.objects[oid] = data
                self._reply(200, {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = ("create" if self.path.startswith("/api/repos/create") else
                        "validate-yaml" if self.path.startswith("/api/validate-yaml") else
                        "lfs-batch" if self.path.endswith(".git/info/lfs/objects/batch") else
                        "lfs-verify" if self.path.startswith("/lfs-verify/") else
                        "preupload" if "/preupload/" in self.path else "commit" if "/commit/" in self.path else "other")
                if not self._record("POST", kind):
                    return
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
                    hub.repos[repo_id] = {"private": req.get("visibility") == "private" or bool(req.get("private")),
                                          "files": {}, "lfs_paths": set(), "commits": [], "head": "0" * 40}
                    return self._reply(200, {"url": self._url(repo_id), "name": repo_id})
                if kind == "lfs-verify":
                    req = json.loads(body)
                    ok = req["oid"] in hub.objects and len(hub.objects[req["oid"]]) == req["size"]
                    return self._reply(200 if ok else 404, {} if ok else {"error": "object not found"})
                if kind == "lfs-batch":
                    return self._lfs_batch(json.loads(body))
                repo_id = self.path.split("/api/datasets/", 1)[1].split(f"/{kind}/", 1)[0]
                if repo_id not in hub.repos:
                    return self._reply(404, {"error": "Repository not found"})
                repo = hub.repos[repo_id]
                if kind == "preupload":
                    out = []
                    for f in json.loads(body)["files"]:
                        mode = "lfs" if hub.lfs and f["path"].endswith(".parquet") else "regular"
                        have = repo["files"].get(f["path"])
                        oid = None if have is None else (hashlib.sha256(have).hexdigest() if f["path"] in repo["lfs_paths"]
                                                         else git_oid(have))
                        out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
                    return self._reply(200, {"files": out})
                if kind == "commit":
                    return self._commit(repo_id, repo, body)
                return self._reply(404, {"error": "unknown endpoint"})

            def _lfs_batch(self, req: dict):
                if hub.on_batch:
                    hub.on_batch(req)
                if "basic" not in req.get("transfers", ["basic"]):
                    return self._reply(422, {"message": "only the basic transfer is offered"})
                host = f"http://{self.headers['Host']}"
                objects = []
                for o in req["objects"]:
                    if o["oid"] in hub.objects:  # already stored: nothing to send
                        objects.append({"oid": o["oid"], "size": o["size"]})
                    else:
                        objects.append({"oid": o["oid"], "size": o["size"], "authenticated": True, "actions": {
                            "upload": {"href": f"{host}/lfs-upload/{o['oid']}", "header": {}},
                            "verify": {"href": f"{host}/lfs-verify/{o['oid']}", "header": {}}}})
                self._reply(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

            def _commit(self, repo_id: str, repo: dict, body: bytes):
                staged, lfs_paths, summary, deleted = {}, set(), None, set()
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    v = item["value"]
                    if item["key"] == "header":
                        summary = v["summary"]
                    elif item["key"] == "file" and v.get("encoding") == "base64":
                        staged[v["path"]] = base64.b64decode(v["content"])
                    elif item["key"] == "lfsFile":
                        if v["oid"] not in hub.objects:
                            return self._reply(422, {"error": f"{v['path']}: LFS object {v['oid'][:12]} was never uploaded"})
                        staged[v["path"]] = hub.objects[v["oid"]]
                        lfs_paths.add(v["path"])
                    elif item["key"] == "deletedFile":
                        if v["path"] not in repo["files"]:
                            return self._reply(404, {"error": f"{v['path']}: no such file to delete"})
                        deleted.add(v["path"])
                    else:
                        return self._reply(400, {"error": f"unsupported commit item {item['key']}"})
                for path in deleted:
                    del repo["files"][path]
                repo["lfs_paths"] -= deleted
                repo["files"].update(staged)
                repo["lfs_paths"] = (repo["lfs_paths"] - set(staged)) | lfs_paths
                repo["commits"].append(summary)
                repo["head"] = hashlib.sha1(f"{repo_id}{len(repo['commits'])}".encode()).hexdigest()
                return self._reply(200, {"commitUrl": f"{self._url(repo_id)}/commit/{repo['head']}", "commitOid": repo["head"]})

            def _url(self, repo_id: str) -> str:
                return f"http://{self.headers['Host']}/datasets/{repo_id}"

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        time.sleep(0.05)
        self.server.shutdown()
        self.server.server_close()

    def checkout(self, repo_id: str, folder: Path) -> Path:
        """The repository as committed, written to a folder (what a clone would hold, LFS files resolved)."""
        for path, data in self.repos[repo_id]["files"].items():
            p = folder / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return folder
