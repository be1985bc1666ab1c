"""Versioned publication under the refresh lease: thresholds, the CLV model, their fences.

One process at a time holds the lease (a refresh, a refit, a reconfiguration); it publishes
a new version only over the version it read, and raises every shard's fence so no commit
scored against an older version lands afterwards.
"""

from __future__ import annotations

import secrets

import orjson

from stream.clv.prediction import Model, Unfit
from stream.core.scoring import Thresholds
from stream.store.connection import StorePart


def decode_thresholds(version: int, raw: bytes | None) -> Thresholds:
    """Thresholds of ``version`` from their stored JSON (none stored: no edges yet)."""
    if not raw:
        return Thresholds(version=version)
    doc = orjson.loads(raw)
    return Thresholds(
        version=version,
        edges={k: tuple(v) for k, v in doc.get("edges", {}).items()},
        population=doc.get("population", {}),
        computed_at=doc.get("computed_at", 0),
    )


def encode_thresholds(t: Thresholds) -> bytes:
    """Thresholds as stored: JSON without the version, which the hash keeps beside it."""
    return orjson.dumps(
        {
            "edges": {k: list(v) for k, v in t.edges.items()},
            "population": dict(t.population),
            "computed_at": t.computed_at,
        }
    )


class Publication(StorePart):
    # ---- thresholds -----------------------------------------------------------------

    async def thresholds(self) -> tuple[Thresholds, Thresholds]:
        """(current, base): base is the last version every customer is settled against
        (version -1: none, see ``unsettle_thresholds``)."""
        v, doc, base = await self.redis.hmget(self.keys.thresholds, ["v", "doc", "base"])
        version = int(v or 0)
        current = decode_thresholds(version, doc)
        if base:
            parsed = orjson.loads(base)
            settled = decode_thresholds(parsed["version"], orjson.dumps(parsed))
        else:
            settled = Thresholds(version=0)
        return current, settled

    async def thresholds_version(self) -> int:
        return int(await self.redis.hget(self.keys.thresholds, "v") or 0)

    async def publish_thresholds(self, token: str, read_version: int, t: Thresholds) -> int:
        """Returns the new version, or -1 (lease lost) / -2 (a newer version exists). The
        new version is above every shard's fence (see ``lost_publication``)."""
        floor, _ = await self.fenced_versions()
        version = int(
            await self.scripts.publish_thresholds(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, read_version, "doc", encode_thresholds(t), floor],
            )
        )
        if version > 0:
            await self.raise_fences()
        return version

    async def settle_thresholds(self, token: str, t: Thresholds) -> int:
        doc = orjson.loads(encode_thresholds(t))
        doc["version"] = t.version
        return int(
            await self.scripts.publish_thresholds(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, t.version, "base", orjson.dumps(doc)],
            )
        )

    async def unsettle_thresholds(self, token: str) -> int:
        """Record that no customer is known to be settled against any version (base version
        -1): the refresh that finds it re-scores every customer, and so does the next one if
        it dies first. Returns the current version, or -1 / -2 as ``settle_thresholds``."""
        return int(
            await self.scripts.publish_thresholds(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, await self.thresholds_version(), "base", b'{"version":-1}'],
            )
        )

    # ---- the CLV model --------------------------------------------------------------

    async def model(self) -> Model | None:
        version, raw = await self.redis.hmget(self.keys.thresholds, ["mv", "model"])
        return Model.from_doc(int(version), raw) if version and raw else None

    async def model_checks(self) -> tuple[int, bytes] | None:
        """(model version, its checks as stored JSON); one HMGET, so both are of one fit."""
        version, raw = await self.redis.hmget(self.keys.thresholds, ["mv", "checks"])
        return (int(version), raw) if version and raw else None

    async def model_history(self, count: int = 50) -> list[Model]:
        """Published models, newest first (the parameters of each fit, for audit)."""
        out = []
        for entry in await self.redis.lrange(self.keys.model_history, 0, count - 1):
            version, _, raw = entry.partition(b" ")
            out.append(Model.from_doc(int(version), raw))
        return out

    async def model_version(self) -> int:
        return int(await self.redis.hget(self.keys.thresholds, "mv") or 0)

    async def publish_model(
        self, token: str, read_version: int, model: Model, checks: bytes
    ) -> int:
        """Returns the new version, or -1 (lease lost) / -2 (a newer model exists). The
        model's checks (``stream.clv.checks``) are written in the same step."""
        return await self._publish_model_doc(token, read_version, model.doc(), checks)

    async def republish_model(self, token: str) -> int:
        """The stored model and its checks published again as a new version, above every
        fence (``lost_publication``): a worker caching the lost version is refused, and
        re-scores meet one model under one number. Returns the version, 0 when no model is
        stored (nothing to fence: a worker without a model does not check it), or -1/-2."""
        mv, raw, checks = await self.redis.hmget(self.keys.thresholds, ["mv", "model", "checks"])
        if not raw:
            return 0
        return await self._publish_model_doc(token, int(mv or 0), raw, checks or b"")

    async def _publish_model_doc(
        self, token: str, read_version: int, doc: bytes, checks: bytes
    ) -> int:
        _, floor = await self.fenced_versions()
        version = int(
            await self.scripts.publish_model(
                keys=[self.keys.thresholds, self.keys.lease, self.keys.model_history],
                args=[token, read_version, doc, checks, floor],
            )
        )
        if version > 0:
            await self.raise_fences()
        return version

    async def unfit(self) -> Unfit | None:
        """Why the last fit published nothing; None once a fit publishes (publish_model.lua
        clears it in the same step)."""
        raw = await self.redis.hget(self.keys.thresholds, "unfit")
        return Unfit.from_doc(raw) if raw else None

    async def record_unfit(self, unfit: Unfit) -> None:
        """Called by the lease holder, so no publication can come between its fit and this."""
        await self.redis.hset(self.keys.thresholds, "unfit", unfit.doc())

    # ---- fences and the lease -------------------------------------------------------

    async def raise_fences(self) -> None:
        """Sharded: bring every shard's fence up to the published versions, so no commit
        scored against an older version lands after this returns. Callers re-score after
        it; a publisher that died before it is made good by the next refresh or fit (and
        any commit made with the newer version raises its own shard's fence)."""
        if not self.keys.sharded:
            return
        v, mv = await self.redis.hmget(self.keys.thresholds, ["v", "mv"])
        args = [int(v or 0), int(mv or 0)]
        await self.scripts.run(
            self.scripts.raise_fence, [([self.keys.fence(s)], args) for s in self.keys.all_shards]
        )

    async def fenced_versions(self) -> tuple[int, int]:
        """The highest (thresholds, model) versions the shards' fences hold; (0, 0) unsharded,
        where the fence is the thresholds hash itself."""
        if not self.keys.sharded:
            return 0, 0
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            pipe.hmget(self.keys.fence(s), ["v", "mv"])
        found = await pipe.execute()
        return max(int(v or 0) for v, _ in found), max(int(mv or 0) for _, mv in found)

    async def lost_publication(self) -> tuple[bool, bool]:
        """Whether a shard's fence holds a thresholds (model) version above the published
        one. Only a rollback does that: Redis lost a publication with its tail while a
        worker that had read it ran on and committed against it (a commit raises its shard's
        fence to its version). Those customers hold scores (churn flags) of a version nobody
        can read any more, so the refresh (fit) must be done again, above that fence. The
        fences are read first: a version they hold was published before the hash is read."""
        fenced = await self.fenced_versions()
        v, mv = await self.redis.hmget(self.keys.thresholds, ["v", "mv"])
        return fenced[0] > int(v or 0), fenced[1] > int(mv or 0)

    async def acquire_lease(self, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        ok = await self.redis.set(self.keys.lease, token, nx=True, px=ttl_ms)
        return token if ok else None

    async def renew_lease(self, token: str, ttl_ms: int) -> bool:
        return bool(await self.scripts.renew_lease(keys=[self.keys.lease], args=[token, ttl_ms]))

    async def release_lease(self, token: str) -> None:
        await self.scripts.release_lease(keys=[self.keys.lease], args=[token])

    # ---- what the last refresh, fit and configuration were ---------------------------

    async def fingerprint(self) -> str | None:
        raw = await self.redis.get(self.keys.scoring_fingerprint)
        return raw.decode() if raw else None

    async def set_fingerprint(self, token: str, digest: str) -> bool:
        """Record the configuration every customer is now classified with (lease holder only)."""
        return bool(
            await self.scripts.set_under_lease(
                keys=[self.keys.lease, self.keys.scoring_fingerprint], args=[token, digest]
            )
        )

    async def refreshed_at(self) -> int:
        """When thresholds were last refreshed; 0 (never) when a publication was lost
        (``lost_publication``): the next periodic round's refresh redoes it at once."""
        if any(await self.lost_publication()):
            return 0
        return int(await self.redis.get(self.keys.refreshed_at) or 0)

    async def mark_refreshed(self, at_ms: int) -> None:
        await self.redis.set(self.keys.refreshed_at, at_ms)

    async def fitted_at(self, default: int) -> int:
        """When the CLV model was last fitted; records ``default`` if never (the fit clock
        then starts now rather than fitting the moment a worker first starts). 0 when a fit
        was lost after commits against it (``lost_publication``): a fit is due now, and it
        publishes above the fence that refuses every worker reading the older model."""
        if (await self.lost_publication())[1]:
            return 0
        await self.redis.set(self.keys.fitted_at, default, nx=True)
        return int(await self.redis.get(self.keys.fitted_at) or default)

    async def mark_fitted(self, at_ms: int) -> None:
        await self.redis.set(self.keys.fitted_at, at_ms)
