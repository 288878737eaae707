"""Container health check: exit 0 when the local server's /ready answers 200, else 1.

python -m service.healthcheck      (uses ASR_PORT, default 8000)
"""

import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('ASR_PORT', '8000')}/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as error:
    print(f"{url}: {error}", file=sys.stderr)
    sys.exit(1)
