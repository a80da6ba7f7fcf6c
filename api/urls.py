from django.urls import path, re_path

from api.main import api, not_found
from api.streaming import join_run_stream

urlpatterns = [
    # /api/ itself is ninja's "api-root", which it keeps to reverse its own paths and answers with
    # the reviewer's HTML 404; the API's JSON one comes first.
    path("", not_found),
    # Async views ahead of ninja's (sync) operations: a stream waits on its backend, not on a thread.
    path("threads/<str:thread_id>/runs/<str:run_id>/stream", join_run_stream, name="join_run_stream"),
    path("", api.urls),
    re_path(r"^(?P<rest>.*)$", not_found),
]
