"""The staff pages: server-rendered (aiohttp-jinja2), styled with GOV.UK Frontend.

GOV.UK Frontend's built CSS, JavaScript, fonts and images are served from the npm package
installed by the build (``make``: ``web/node_modules``), never from a CDN. Responses carry a
Content-Security-Policy that allows this site's own scripts, styles, images and media only.
"""

import logging
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from web.pages import audit, exports, holds, lifecycle, quality, views

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent.parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
GOVUK = HERE / "node_modules" / "govuk-frontend" / "dist" / "govuk"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")

PAGES = [
    ("GET", "/", views.home, "page_home"),
    ("GET", "/signin", views.signin_form, "page_signin_form"),
    ("POST", "/signin", views.signin, "page_signin"),
    ("POST", "/signout", views.signout, "page_signout"),
    ("GET", "/account", views.account, "page_account"),
    ("GET", "/search", views.search_page, "page_search"),
    ("GET", "/items/{item_id}", views.item_page, "page_item"),
    *holds.PAGES, *exports.PAGES, *quality.PAGES, *lifecycle.PAGES, *audit.PAGES,
]


@web.middleware
async def page_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared and response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def setup_pages(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES),
                         autoescape=jinja2.select_autoescape(["html"]),
                         undefined=jinja2.StrictUndefined)
    for method, path, handler, name in PAGES:
        app.router.add_route(method, path, handler, name=name)
    app.router.add_static("/static/", STATIC, name="static")
    if GOVUK.is_dir():
        app.router.add_static("/govuk/", GOVUK, name="govuk")
        app.router.add_static("/assets/", GOVUK / "assets", name="govuk_assets")
    else:
        log.warning("GOV.UK Frontend is not installed (run make): pages are unstyled")
    app.middlewares.append(page_headers)
