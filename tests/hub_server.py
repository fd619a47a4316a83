"""A Hub-compatible server on loopback, just enough of the API that huggingface_hub's client calls to
create repos, upload files (regular, not LFS/Xet) and read them back. Tests point HF_ENDPOINT at it.

Repos live in memory: `server.repos[(repo_type, repo_id)] = {"files": {path: bytes}, "commits": [oid]}`;
`server.tokens` collects the bearer tokens the client sent.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server: "HubServer"

    def log_message(self, *args):  # keep test output quiet
        pass

    def reply(self, status: int, body: dict | bytes | None = None, headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
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
            return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
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
        match = re.fullmatch(r"/(datasets/)?(.+?)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
        if match:
            repo = self.server.repos.get(("dataset" if match.group(1) else "model", match.group(2)))
            if repo and match.group(4) in repo["files"]:
                return self.reply(200, repo["files"][match.group(4)])
        return self.reply(404, {"error": "not found"})

    do_HEAD = do_GET


class HubServer(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.repos: dict = {}
        self.tokens: set = set()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
