#!/usr/bin/env python3
"""moto's S3 server with one log line per request, for counting what registries ask of
their object store.

    python3 bench/moto-counted.py --port PORT --log FILE

It serves the same WSGI application as `moto_server` (moto's DomainDispatcherApplication
on werkzeug's threaded server, so the S3 it answers is the same), wrapped in a
middleware that, when a response has been sent in full, appends to FILE one line of
tab-separated fields:

    end-time  bucket  s3-call  method  status  bytes-in  bytes-out  path?query

The s3-call is the S3 API call the request is, from method, path and query (path-style
addressing: the first path segment is the bucket); see `s3_call`. Header-only facts
the access log on stderr cannot show are read here: a PUT with `x-amz-copy-source` is a
server-side copy, not an upload. bytes-in is the request's Content-Length (a body sent
without one is marked `chunked`); bytes-out is what the response body carried.

werkzeug's own access log still goes to stderr, one line per request: the benchmark
script checks that both agree on the count. Only moto and the standard library.
"""

import argparse
import os
import sys
import threading
import time
from urllib.parse import parse_qs

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def s3_call(method, path, query, copy):
    """The S3 API call a path-style request is (the names S3's API reference uses)."""
    parts = path.lstrip("/").split("/", 1)
    key = parts[1] if len(parts) > 1 else ""
    q = parse_qs(query, keep_blank_values=True)
    if not key:
        if method == "GET":
            if "uploads" in q:
                return "ListMultipartUploads"
            return "ListObjectsV2" if q.get("list-type") == ["2"] else "ListObjects"
        if method == "POST" and "delete" in q:
            return "DeleteObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, method + "Bucket")
    if method == "PUT" and "partNumber" in q and "uploadId" in q:
        return "UploadPartCopy" if copy else "UploadPart"
    if method == "PUT":
        return "CopyObject" if copy else "PutObject"
    if method == "POST" and "uploads" in q:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in q:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in q:
        return "AbortMultipartUpload"
    if method == "GET" and "uploadId" in q:
        return "ListParts"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method + "Object")


class Counted:
    """WSGI middleware: one log line per request, written once its response is sent."""

    def __init__(self, app, log):
        self.app = app
        self.log = log
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
        length = environ.get("CONTENT_LENGTH") or ""
        if length:
            bytes_in = length
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            bytes_in = "chunked"
        else:
            bytes_in = "0"
        status = ["-"]

        def record_status(line, headers, exc_info=None):
            status[0] = line.split(" ", 1)[0]
            return start_response(line, headers, exc_info)

        body = self.app(environ, record_status)
        sent = 0
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            bucket = path.lstrip("/").split("/", 1)[0]
            fields = [
                f"{time.time():.6f}",
                bucket or "-",
                s3_call(method, path, query, copy),
                method,
                status[0],
                bytes_in,
                str(sent),
                path + ("?" + query if query else ""),
            ]
            line = "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n"
            with self.lock:
                self.log.write(line)
                self.log.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True, help="file the per-request lines are appended to")
    args = ap.parse_args()
    # As moto_server does: some of moto's answers name the port they were served on.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    log = open(args.log, "a", encoding="utf-8")
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Counted(app, log), threaded=True)


if __name__ == "__main__":
    sys.exit(main())
