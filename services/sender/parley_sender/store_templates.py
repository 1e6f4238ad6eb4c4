"""The tenants' message templates as synced from Meta and updated by its template webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from parley_sender.domain.templates import Template, TemplateCatalogue


class TemplateTables:
    """``sender.templates``."""

    pool: asyncpg.Pool

    async def catalogue(self, tenant_id: str) -> TemplateCatalogue:
        rows = await self.pool.fetch("SELECT * FROM sender.templates WHERE tenant_id = $1", tenant_id)
        return TemplateCatalogue.of(_template(r) for r in rows)

    async def templates(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM sender.templates WHERE tenant_id = $1 ORDER BY name, language", tenant_id
        )
        return [dict(r) for r in rows]

    async def upsert_templates(self, tenant_id: str, templates: Sequence[Template]) -> None:
        await self.pool.executemany(
            """INSERT INTO sender.templates (tenant_id, name, language, waba_id, template_id, category, status,
                   quality, parameter_format, components) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
               ON CONFLICT (tenant_id, name, language) DO UPDATE SET waba_id = EXCLUDED.waba_id,
                 template_id = EXCLUDED.template_id, category = EXCLUDED.category, status = EXCLUDED.status,
                 quality = COALESCE(EXCLUDED.quality, sender.templates.quality),
                 parameter_format = EXCLUDED.parameter_format, components = EXCLUDED.components,
                 updated_at = now()""",
            [
                (
                    tenant_id,
                    t.name,
                    t.language,
                    t.waba_id,
                    t.template_id,
                    t.category,
                    t.status,
                    t.quality,
                    t.parameter_format,
                    list(t.components),
                )
                for t in templates
            ],
        )

    async def remove_templates_not_in(
        self, tenant_id: str, waba_id: str, keep: Sequence[tuple[str, str]]
    ) -> int:
        result = await self.pool.execute(
            """DELETE FROM sender.templates WHERE tenant_id = $1 AND waba_id = $2
               AND (name, language) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))""",
            tenant_id,
            waba_id,
            [k[0] for k in keep],
            [k[1] for k in keep],
        )
        return int(result.split()[-1])

    async def update_template(
        self,
        tenant_id: str,
        *,
        template_id: str | None,
        name: str | None,
        language: str | None,
        **changes: str,
    ) -> int:
        sets = ", ".join(f"{col} = ${i + 5}" for i, col in enumerate(changes))
        result = await self.pool.execute(
            f"""UPDATE sender.templates SET {sets}, updated_at = now() WHERE tenant_id = $1 AND
                (($2::text IS NOT NULL AND template_id = $2) OR
                 (name = $3 AND ($4::text IS NULL OR language = $4)))""",
            tenant_id,
            template_id,
            name,
            language,
            *changes.values(),
        )
        return int(result.split()[-1])


def _template(r: asyncpg.Record) -> Template:
    return Template(
        name=r["name"],
        language=r["language"],
        category=r["category"],
        status=r["status"],
        components=tuple(r["components"] or ()),
        parameter_format=r["parameter_format"],
        quality=r["quality"],
        template_id=r["template_id"],
        waba_id=r["waba_id"],
    )
