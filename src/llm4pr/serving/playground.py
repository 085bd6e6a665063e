"""The playground: a page at `/` that posts a request to `/v1/post-rank?explain=true` and shows
the given and the post-ranked order side by side, with each candidate's field attributions.

The page is three static files shipped inside the package (`static/`): no build step, no CDN, no
request to any other host (its Content-Security-Policy says so), so it works on an offline
machine and shows exactly what the API answers, errors included. Sample requests come from the
`--examples` file, read and checked against the ranker's schema once at start-up, so that a bad
file stops the server with the line that is wrong instead of failing later in a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import iter_json_lines, parse_record, request_parser
from llm4pr.data.schema import FeatureSchema

MAX_EXAMPLES = 50
STATIC_DIR = Path(__file__).parent / "static"
# Everything the page loads comes from this server; the page makes no request anywhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def load_examples(path: str | Path, schema: FeatureSchema, limit: int = MAX_EXAMPLES) -> list[dict[str, Any]]:
    """The first `limit` requests of a JSON-lines file, as written, each checked against `schema`
    (as `/v1/post-rank` would check it). Lines after the first `limit` are not read: a whole
    test split can be passed. Raises one DataError listing every bad line, or for an empty file."""
    examples: list[dict[str, Any]] = []
    errors: list[str] = []
    seen: set[str] = set()
    parse = request_parser(schema)
    for number, obj in iter_json_lines(path):
        if len(examples) + len(errors) >= limit:
            break
        where = f"{path}:{number}"
        if isinstance(obj, Exception):
            errors.append(f"{where}: invalid JSON: {obj}")
            continue
        try:
            request = parse_record(obj, parse, where)
        except DataError as exc:
            errors.append(str(exc))
            continue
        if request.request_id in seen:
            errors.append(f"{where}: request_id '{request.request_id}' appears more than once")
            continue
        seen.add(request.request_id)
        examples.append(obj)
    if errors:
        raise DataError(f"--examples: {len(errors)} bad request(s) in {path}:\n" + "\n".join(errors))
    if not examples:
        raise DataError(f"--examples: {path} holds no request")
    return examples
