"""Which options a request may carry, and where.

A name a route does not take is an error, not ignored: `?catgory=Shoes` would otherwise search
without the category and look as if it had worked. The options of a multipart route (`k`,
`category`, `box`, ... on POST /search) may come as form fields or in the query string
(`curl -F image=@x.jpg 'host/search?k=5'`); the same option given both ways, differently, is
an error, as is a single-valued option given twice. Files come in the body only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from shards.errors import InvalidInput


@dataclass(frozen=True)
class RouteOptions:
    query: frozenset[str]          # query parameters the route declares
    form: frozenset[str]           # form fields (files excluded)
    files: frozenset[str]          # file fields: the body only
    repeatable: frozenset[str]     # list-valued ones (one per image of a batch)


def check_options(where: str, route: RouteOptions, query: list[tuple[str, str]],
                  form: list[tuple[str, object]]) -> None:
    """Raise InvalidInput for an unknown, conflicting or repeated option; `where` is 'POST /search'."""
    takes = sorted(route.query | route.form | route.files)
    listed = f"{where} takes {', '.join(takes)}" if takes else f"{where} takes no options"
    unknown = sorted({k for k, _ in query} - route.query - route.form - route.files)
    unknown += sorted({k for k, _ in form} - route.form - route.files - set(unknown))
    if unknown:
        near = [m for name in unknown for m in difflib.get_close_matches(name, takes, n=1, cutoff=0.6)]
        hint = f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""
        raise InvalidInput(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                           f"{hint}: {listed}")
    if files_in_url := sorted({k for k, _ in query} & route.files):
        raise InvalidInput(f"{files_in_url[0]} is a file: send it in the multipart body, not in the URL")
    in_query = _values(query)
    in_form = _values([(k, v) for k, v in form if k in route.form])
    for name in sorted(in_query.keys() & in_form.keys()):
        if in_query[name] != in_form[name]:
            raise InvalidInput(f"{name} is given twice, in the URL ({_shown(in_query[name])}) and in the form "
                               f"({_shown(in_form[name])}): give it once")
    for name, values in sorted((in_query | in_form).items()):
        if len(values) > 1 and name not in route.repeatable:
            raise InvalidInput(f"{name} is given {len(values)} times ({_shown(values)}): give it once")


def from_query_if_absent(query: list[tuple[str, str]], name: str, form_value, repeatable: bool = False):
    """A multipart route's option: its form value or, when the form has none, the query string's
    (all of them for a list-valued option, one per image of a batch)."""
    if form_value is not None:
        return form_value
    values = [v for k, v in query if k == name]
    if not values:
        return None
    return values if repeatable else values[0]


def _values(pairs) -> dict[str, list]:
    out: dict[str, list] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def _shown(values: list) -> str:
    return ", ".join(repr(v) for v in values)


def route_options(route) -> RouteOptions:
    """What a FastAPI route declares (its dependencies' parameters included), read once per route."""
    got = _declared.get(id(route))
    if got is None:
        from fastapi import params
        query, body = _fields(route.dependant, "query_params"), _fields(route.dependant, "body_params")
        files = {f.alias for f in body if isinstance(f.field_info, params.File)}
        # Ray Serve injects a class-based route's instance as `self`; the route object FastAPI
        # hands us still lists it as a query parameter, which no client may send
        query = [f for f in query if f.alias != "self"]
        got = RouteOptions(query=frozenset(f.alias for f in query),
                           form=frozenset(f.alias for f in body) - files,
                           files=frozenset(files),
                           repeatable=frozenset(f.alias for f in query + body if _is_list(f.field_info.annotation)))
        _declared[id(route)] = got
    return got


_declared: dict[int, RouteOptions] = {}


def _fields(dependant, kind: str) -> list:
    """A dependant's fields of one kind, its sub-dependencies' included."""
    return list(getattr(dependant, kind)) + [f for d in dependant.dependencies for f in _fields(d, kind)]


def _is_list(annotation) -> bool:
    """list[str], list[str] | None, Optional[list[UploadFile]]."""
    import typing
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation))
