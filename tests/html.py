"""Reading pages as a browser would submit them."""

from __future__ import annotations

from html.parser import HTMLParser


class _Forms(HTMLParser):
    """The fields a browser would submit from one <form id=...>, as name -> value."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, str] = {}
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "name" not in a and tag not in ("option",):
            return
        if tag == "input":
            ticked = a.get("type") in ("checkbox", "radio")
            if ticked and "checked" not in a:
                return
            self.fields[a["name"]] = a.get("value", "on" if ticked else "")
        elif tag == "select":
            self.select = a["name"]
        elif tag == "option" and self.select and "selected" in a:
            self.fields[self.select] = a.get("value", "")
        elif tag == "textarea":
            self.textarea = a["name"]
            self.fields[a["name"]] = ""

    def handle_data(self, data: str) -> None:
        if self.textarea:
            self.fields[self.textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea" and self.textarea:
            # Browsers drop the one newline that follows <textarea>.
            self.fields[self.textarea] = self.fields[self.textarea].removeprefix("\n")
            self.textarea = None


def form_fields(html: str, form_id: str) -> dict[str, str]:
    """The fields a browser would submit from `<form id=form_id>` of `html`, as name -> value."""
    parser = _Forms(form_id)
    parser.feed(html)
    return parser.fields
