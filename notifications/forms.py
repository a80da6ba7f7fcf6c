from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User

from notifications import queries
from notifications.models import Preference


class PreferencesForm(forms.Form):
    """One choice per workflow the user reviews: immediately, daily digest or off."""

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = queries.preferences(user)
        self.workflows = queries.reviewed_workflows(user)
        for spec in self.workflows:
            self.fields[spec.name] = forms.ChoiceField(
                label=spec.title,
                choices=Preference.Delivery.choices,
                initial=current[spec.name],
                widget=forms.RadioSelect,
                error_messages={
                    "required": "Choose how you hear of this workflow.",
                    "invalid_choice": "Choose immediately, daily digest or off.",
                },
            )
