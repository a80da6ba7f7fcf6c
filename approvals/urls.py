from django.urls import path

from approvals import link_views, views

app_name = "approvals"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("reviews/approve/", views.bulk_approve, name="bulk_approve"),
    path("filters/", views.save_filter, name="save_filter"),
    path("filters/<int:pk>/delete/", views.delete_filter, name="delete_filter"),
    path("reviews/<int:pk>/", views.review_detail, name="review"),
    path("reviews/<int:pk>/claim/", views.review_claim, name="claim"),
    path("reviews/<int:pk>/release/", views.review_release, name="release"),
    path("reviews/<int:pk>/follow-up/", views.review_follow_up, name="follow_up"),
    path("reviews/<int:pk>/preview/", views.review_preview, name="preview"),
    path("reviews/<int:pk>/decide/", views.review_decide, name="decide"),
    path("threads/", views.threads, name="threads"),
    path("threads/<uuid:public_id>/", views.thread_detail, name="thread"),
    path("threads/<uuid:public_id>/retry/", views.thread_retry, name="thread_retry"),
    path("reviews/<int:pk>/take-over/", views.review_take_over, name="take_over"),
    path("reviews/<int:pk>/reassign/", views.review_reassign, name="reassign"),
    path("reviews/<int:pk>/hand-on/", views.review_hand_on, name="hand_on"),
    path("inbox/", views.inbox, name="inbox"),
    path("inbox/<int:pk>/", views.inbox, name="inbox_review"),
    path("metrics/", views.metrics_page, name="metrics"),
    # One-click links from emails; the signed token is in the query string (approvals.links).
    path("links/", link_views.follow_link, name="link"),
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.csv", views.audit_export_csv, name="audit_export_csv"),
    path("audit/export.jsonl", views.audit_export_jsonl, name="audit_export_jsonl"),
    path("audit/threads/<uuid:public_id>/", views.audit_thread, name="audit_thread"),
]
