#!/usr/bin/env python3
"""Creates a blob container on Azurite (the local Azure Storage emulator).

    scripts/azurite-container.py http://127.0.0.1:10000 <container>

Signs the request with Azurite's documented development account (devstoreaccount1 and
its published key, which only the emulator accepts: test-only, not a secret). Exits 0
when the container exists afterwards (created now, or already there).
"""
import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public; accepted by the emulator only).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2021-08-06"


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, container = sys.argv[1].rstrip("/"), sys.argv[2]
    date = formatdate(usegmt=True)
    # Shared Key: VERB, eleven standard headers (only Content-Type set: urllib would
    # add one of its own), the x-ms- headers, then the canonical resource (the account,
    # the path, the query parameters).
    content_type = "application/octet-stream"
    to_sign = "\n".join(
        ["PUT", "", "", "", "", content_type] + [""] * 6
        + [f"x-ms-date:{date}", f"x-ms-version:{VERSION}",
           f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"]
    )
    signature = base64.b64encode(
        hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    request = urllib.request.Request(
        f"{endpoint}/{ACCOUNT}/{container}?restype=container",
        method="PUT",
        data=b"",
        headers={
            "Content-Type": content_type,
            "x-ms-date": date,
            "x-ms-version": VERSION,
            "Authorization": f"SharedKey {ACCOUNT}:{signature}",
        },
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # ContainerAlreadyExists
            print(f"creating container {container}: {e.code} {e.read().decode()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
