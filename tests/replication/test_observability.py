"""Replication as operators see it: the ``durasync_replication_*`` families of ``/metrics``
(scraped with prometheus_client's parser) and the links of ``/v1/inspect/node``, between two
in-process servers; a link's token shows in neither."""

from __future__ import annotations

import time

import httpx
import jwt

from durasync.metrics import LINK_STATUSES
from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.streams.app import StreamSettings
from opsutil import Samples, ascrape, value

from .helpers import app_with, eventually, links, serving

SECRET = "observability-test-secret-0123456789abcdef"
JSON = {"Content-Type": "application/json"}


def _families(samples: Samples) -> set[str]:
    return {name for name, _ in samples if name.startswith("durasync_replication_")}


async def test_link_metrics_and_node_view_follow_the_traffic() -> None:
    cloud_app = create_app(
        MemoryStore(),
        ServerSettings(streams=StreamSettings(long_poll_timeout=1.0), auth_secret=SECRET),
    )
    # The link may read everything and write under out/ok/ only: out/no/ is refused for
    # good (a dead letter).
    token = jwt.encode(
        {"sub": "edge", "exp": time.time() + 3600, "read": [""], "write": ["stream/out/ok/"]},
        SECRET,
        algorithm="HS256",
    )
    admin = jwt.encode(
        {"sub": "test", "exp": time.time() + 3600, "read": [""], "write": [""]},
        SECRET,
        algorithm="HS256",
    )
    auth = {"Authorization": f"Bearer {admin}"}
    async with serving(cloud_app) as cloud, httpx.AsyncClient(timeout=10) as http:
        cbase = cloud + "/v1/stream/"
        assert (await http.put(cbase + "s/a", headers={**auth, **JSON})).status_code == 201
        config = links(
            {"name": "up", "remote": cloud, "token": token, "pull": ["s/"], "push": ["out/"]}
        )
        edge_app = app_with(MemoryStore(), config)
        async with serving(edge_app) as edge:
            ebase = edge + "/v1/stream/"

            async def scrape() -> Samples:
                return await ascrape(http, edge)

            async def live() -> bool:
                samples = await scrape()
                return (
                    value(samples, "durasync_replication_link_status", link="up", status="live")
                    == 1
                )

            await eventually(live)
            samples = await scrape()
            # One sample per known status, exactly one of them set; bounded labels only.
            statuses = {
                s: value(samples, "durasync_replication_link_status", link="up", status=s)
                for s in LINK_STATUSES
            }
            assert statuses == {s: float(s == "live") for s in LINK_STATUSES}
            assert value(samples, "durasync_replication_link_connected", link="up") == 1
            assert value(samples, "durasync_replication_dead_letters", link="up") == 0
            pulled0 = value(
                samples, "durasync_replication_messages_total", link="up", direction="pulled"
            )
            pushed0 = value(
                samples, "durasync_replication_messages_total", link="up", direction="pushed"
            )
            assert _families(samples) >= {
                "durasync_replication_lag_messages",
                "durasync_replication_lag_seconds",
                "durasync_replication_gaps_detected_total",
                "durasync_replication_gaps_repaired_total",
            }

            # Pulled: three messages appended at the source.
            for i in range(3):
                r = await http.post(cbase + "s/a", content=f"[{i}]", headers={**auth, **JSON})
                assert r.status_code == 204, r.text
            # Pushed: two messages forwarded, one refused for good.
            for path in ("out/ok/x", "out/no/y"):
                assert (await http.put(ebase + path, headers=JSON)).status_code == 201
            for i in range(2):
                r = await http.post(ebase + "out/ok/x", content=f"[{i}]", headers=JSON)
                assert r.status_code == 204
            r = await http.post(ebase + "out/no/y", content="[0]", headers=JSON)
            assert r.status_code == 204

            async def moved() -> bool:
                s = await scrape()
                return (
                    value(s, "durasync_replication_messages_total", link="up", direction="pulled")
                    >= pulled0 + 3
                    and value(
                        s, "durasync_replication_messages_total", link="up", direction="pushed"
                    )
                    >= pushed0 + 2
                    and value(s, "durasync_replication_dead_letters", link="up") == 1
                )

            await eventually(moved)
            r = await http.get(cbase + "out/ok/x", params={"offset": "-1"}, headers=auth)
            assert r.json() == [0, 1]
            samples = await scrape()
            assert (
                value(samples, "durasync_replication_messages_total", link="up", direction="pushed")
                == pushed0 + 2
            )
            assert value(samples, "durasync_replication_lag_messages", link="up") >= 0
            assert value(samples, "durasync_replication_lag_seconds", link="up") >= 0

            metrics_text = (await http.get(edge + "/metrics")).text
            assert token not in metrics_text
            assert "s/a" not in metrics_text and "out/ok/x" not in metrics_text

            # The node view lists the link, without its token.
            r = await http.get(edge + "/v1/inspect/node")
            assert r.status_code == 200
            assert token not in r.text
            (link,) = r.json()["replicationLinks"]
            assert set(link) == {
                "name",
                "remote",
                "status",
                "connectivity",
                "lag",
                "deadLetters",
            }
            assert link["name"] == "up" and link["remote"] == cloud
            assert link["status"] == "live" and link["connectivity"] == "online"
            assert link["deadLetters"] == 1
            assert set(link["lag"]) == {"messages", "seconds"}

            # Paused: the status set moves with it.
            assert (await http.post(edge + "/v1/replication/links/up/pause")).status_code == 200

            async def paused() -> bool:
                s = await scrape()
                return (
                    value(s, "durasync_replication_link_status", link="up", status="paused") == 1
                    and value(s, "durasync_replication_link_status", link="up", status="live") == 0
                )

            await eventually(paused)
            node = (await http.get(edge + "/v1/inspect/node")).json()
            assert node["replicationLinks"][0]["status"] == "paused"


async def test_a_repaired_gap_is_counted() -> None:
    async with serving(app_with()) as src, httpx.AsyncClient(timeout=10) as http:
        sbase = src + "/v1/stream/"
        text = {"Content-Type": "text/plain"}
        await http.put(sbase + "s/a", headers=text)
        await http.post(sbase + "s/a", content=b"old", headers=text)
        edge_app = app_with(MemoryStore(), links({"name": "up", "remote": src, "pull": ["s/"]}))
        async with serving(edge_app) as edge:

            async def mirrored(data: bytes) -> bool:
                r = await http.get(edge + "/v1/stream/s/a", params={"offset": "-1"})
                return r.status_code == 200 and r.content == data

            await eventually(lambda: mirrored(b"old"))
            before = await ascrape(http, edge)
            assert value(before, "durasync_replication_gaps_detected_total", link="up") == 0
            assert value(before, "durasync_replication_gaps_repaired_total", link="up") == 0
            # The source is re-created while the link is paused: a gap on resume, repaired.
            assert (await http.post(edge + "/v1/replication/links/up/pause")).status_code == 200
            assert (await http.delete(sbase + "s/a")).status_code == 204
            await http.put(sbase + "s/a", headers=text)
            await http.post(sbase + "s/a", content=b"new", headers=text)
            assert (await http.post(edge + "/v1/replication/links/up/resume")).status_code == 200
            await eventually(lambda: mirrored(b"new"))

            async def repaired() -> bool:
                s = await ascrape(http, edge)
                return (
                    value(s, "durasync_replication_gaps_detected_total", link="up") >= 1
                    and value(s, "durasync_replication_gaps_repaired_total", link="up") >= 1
                )

            await eventually(repaired)


async def test_no_links_no_link_samples() -> None:
    async with serving(app_with()) as url, httpx.AsyncClient(timeout=10) as http:
        samples = await ascrape(http, url)
        assert not _families(samples)
        node = (await http.get(url + "/v1/inspect/node")).json()
        assert node["replicationLinks"] == []
