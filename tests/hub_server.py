"""A Hub-compatible server on loopback, just enough of the API that huggingface_hub's client calls to
create repos, upload files (regular, not LFS/Xet) and read them back, and that `datasets.load_dataset`
calls to resolve a dataset repo. Tests point HF_ENDPOINT at it.

Repos live in memory: `server.repos[(repo_type, repo_id)] = {"files": {path: bytes}, "commits": [oid]}`;
`server.tokens` collects the bearer tokens the client sent. `HubServer(mirrors=DIR)` starts with the repos
of a folder laid out as DIR/datasets/<owner>/<name>/... and DIR/models/<owner>/<name>/... (see hub_mirrors.py).

What `load_dataset("owner/name", "config", split=...)` asks for (datasets 5.2, huggingface_hub 2.4, as logged):
  HEAD+GET /datasets/{repo}/resolve/main/README.md    the card (configs, data_files); X-Repo-Commit pins the sha
  HEAD     .../resolve/{sha}/{name}.py, .huggingface.yaml, dataset_infos.json    optional: 404 is the answer
  GET      /api/datasets/{repo}/revision/{sha}        the repo's commit (`sha`) and files (`siblings`)
  GET      /api/datasets/{repo}/tree/{sha}/{folder}   a folder's entries, to expand data_files globs
  HEAD+GET .../resolve/{sha}/{data file}              each Parquet file (etag, size, then its bytes)
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


class Handler(BaseHTTPRequestHandler):
    server: "HubServer"

    def log_message(self, *args):  # keep test output quiet
        pass

    def reply(self, status: int, body: dict | list | bytes | None = None, headers: dict | None = None):
        """Send a JSON or binary body (a HEAD answer: its headers only)."""
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def remember_token(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            self.server.tokens.add(auth.removeprefix("Bearer "))

    def do_POST(self):
        self.remember_token()
        path = self.path.split("?")[0]
        if path == "/api/repos/create":
            request = json.loads(self.body())
            repo_type = request.get("type") or "model"
            repo_id = "/".join(filter(None, [request.get("organization"), request["name"]]))
            self.server.repos.setdefault((repo_type, repo_id), {"files": {}, "commits": []})
            prefix = "datasets/" if repo_type == "dataset" else ""
            return self.reply(200, {"url": f"{self.server.url}/{prefix}{repo_id}"})
        if path == "/api/validate-yaml":
            self.body()
            return self.reply(200, {})
        match = re.fullmatch(r"/api/(model|dataset|space)s/(.+)/(preupload|commit)/([^/]+)", path)
        if not match:
            return self.reply(404, {"error": f"unknown endpoint {path}"})
        repo_type, repo_id, action, _revision = match.groups()
        repo = self.server.repos.get((repo_type, repo_id))
        if repo is None:
            return self.reply(404, {"error": f"repo {repo_id} not found"})
        if action == "preupload":
            files = json.loads(self.body())["files"]
            return self.reply(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        lines = [json.loads(line) for line in self.body().decode().splitlines() if line.strip()]
        for line in lines:
            if line["key"] == "file":
                repo["files"][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        oid = hashlib.sha1(json.dumps(lines, sort_keys=True).encode() + str(len(repo["commits"])).encode()).hexdigest()
        repo["commits"].append(oid)
        prefix = "datasets/" if repo_type == "dataset" else ""
        return self.reply(200, {"commitUrl": f"{self.server.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid})

    def do_GET(self):
        self.remember_token()
        url = urlparse(self.path)
        path = unquote(url.path)
        # a repo's info, at a revision or (none given) at its head
        match = re.fullmatch(r"/api/(model|dataset|space)s/((?:[^/]+/)?[^/]+)(?:/revision/([^/]+))?", path)
        if match:
            repo = self.server.repos.get((match.group(1), match.group(2)))
            if repo is None:
                return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(repo["files"].items())]
            return self.reply(200, {"id": match.group(2), "sha": head(repo), "private": False, "siblings": siblings})
        match = re.fullmatch(r"/api/(model|dataset|space)s/(.+?)/tree/([^/]+)/?(.*)", path)
        if match:
            repo = self.server.repos.get((match.group(1), match.group(2)))
            if repo is None:
                return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
            return self.reply(200, tree(repo, match.group(4).strip("/"), recursive))
        match = re.fullmatch(r"/(datasets/)?(.+?)/resolve/([^/]+)/(.+)", path)
        if match:
            repo = self.server.repos.get((REPO_TYPES[match.group(1)], match.group(2)))
            if repo and match.group(4) in repo["files"]:
                data = repo["files"][match.group(4)]
                headers = {"X-Repo-Commit": head(repo), "ETag": f'"{git_blob_oid(data)}"'}
                return self.reply(200, data, headers)
            return self.reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        return self.reply(404, {"error": "not found"})

    do_HEAD = do_GET


REPO_TYPES = {None: "model", "datasets/": "dataset"}


def head(repo: dict) -> str:
    """The repo's current commit: the last push's, or one derived from a mirror's files."""
    if repo["commits"]:
        return repo["commits"][-1]
    return hashlib.sha1(b"".join(name.encode() + data for name, data in sorted(repo["files"].items()))).hexdigest()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree(repo: dict, folder: str, recursive: bool) -> list[dict]:
    """A folder's files and subfolders (all levels if recursive), as the Hub lists them."""
    prefix = folder + "/" if folder else ""
    files = {name: data for name, data in repo["files"].items() if name.startswith(prefix)}
    entries, folders = [], set()
    for name, data in files.items():
        parts = name[len(prefix) :].split("/")
        if len(parts) == 1 or recursive:
            entries.append({"type": "file", "path": name, "size": len(data), "oid": git_blob_oid(data)})
        folders.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts) if recursive else min(2, len(parts))))
    entries += [
        {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}
        for path in folders
    ]
    return sorted(entries, key=lambda e: e["path"])


class HubServer(ThreadingHTTPServer):
    def __init__(self, mirrors: str | Path | None = None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.repos: dict = {}
        if mirrors:
            for prefix, repo_type in (("datasets", "dataset"), ("models", "model")):
                for folder in Path(mirrors).glob(f"{prefix}/*/*"):
                    files = {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}
                    self.repos[(repo_type, str(folder.relative_to(Path(mirrors) / prefix)))] = {
                        "files": files,
                        "commits": [],
                    }
        self.tokens: set = set()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
