"""Real HTTP/2 clients against the proxy over TLS on 127.0.0.1: curl --http2 (libcurl with
nghttp2) and h2load (nghttp2-client), bounded in requests and time."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.proxy.conftest import BackendFactory
from tests.support.certs import CertAuthority

from .support import NAME, h2_proxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


async def _run(*argv: str, timeout: float = 60) -> tuple[int, str, str]:  # noqa: ASYNC109
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_http2(ca: CertAuthority, backends: BackendFactory, tmp_path: Path) -> None:
    backend = await backends("b1")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"u" * 200_000)
    async with h2_proxy(ca, backend.url) as proxy:
        base = [
            "curl", "-sS", "--http2", "--cacert", str(ca.pem), "--max-time", "20",
            "--resolve", f"{NAME}:{proxy.tls_port}:127.0.0.1",
        ]  # fmt: skip
        url = f"https://{NAME}:{proxy.tls_port}"
        code, out, err = await _run(
            *base, "-w", "\n%{http_version} %{response_code}", f"{url}/hello?q=1"
        )
        assert code == 0, err
        body, last = out.rsplit("\n", 1)
        assert last == "2 200"
        assert json.loads(body)["path"] == "/hello?q=1"
        code, out, err = await _run(
            *base, "--data-binary", f"@{upload}", "-H", "Content-Type: application/x-test",
            f"{url}/up",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["size"] == 200_000
        code, out, err = await _run(*base, "-o", "/dev/null", "-w", "%{size_download}",
                                    f"{url}/big?mib=2")  # fmt: skip
        assert out == str(2 << 20)
        # several requests multiplexed on one connection
        code, out, err = await _run(*base, "-v", f"{url}/a", f"{url}/b", f"{url}/c")
        assert code == 0
        assert err.count("Re-using existing connection") + err.count("Reusing existing") >= 2


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
async def test_h2load_bounded(ca: CertAuthority, backends: BackendFactory) -> None:
    """2,000 requests on 4 connections, 10 streams each: all answered 2xx."""
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        code, out, err = await _run(
            "h2load", "-n", "2000", "-c", "4", "-m", "10", "-t", "1",
            f"--connect-to=127.0.0.1:{proxy.tls_port}", f"https://{NAME}/",
        )  # fmt: skip
        assert code == 0, err
        assert "h2" in out
        match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
        assert match is not None, out
        assert match.groups() == ("2000", "2000", "2000", "2000"), out
        assert re.search(r"status codes: (\d+) 2xx", out).group(1) == "2000"  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
async def test_h2load_uploads(ca: CertAuthority, backends: BackendFactory, tmp_path: Path) -> None:
    """300 uploads of 200 KB (several windows each), 10 at a time on each of 3 connections:
    all answered 2xx, the bodies whole at the backend."""
    backend = await backends("b1")
    body = tmp_path / "body.bin"
    body.write_bytes(b"b" * 200_000)
    async with h2_proxy(ca, backend.url) as proxy:
        code, out, err = await _run(
            "h2load", "-n", "300", "-c", "3", "-m", "10", "-t", "1", "-d", str(body),
            f"--connect-to=127.0.0.1:{proxy.tls_port}", f"https://{NAME}/upload",
        )  # fmt: skip
        assert code == 0, err
        assert re.search(r"status codes: (\d+) 2xx", out).group(1) == "300", out  # type: ignore[union-attr]
    assert backend.hits == 300
