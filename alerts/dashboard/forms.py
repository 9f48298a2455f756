"""The list's filters (GET, so a filtered view is a bookmarkable URL)."""
from django import forms

from alerts.models import Category


class ListFilters(forms.Form):
    category = forms.ChoiceField(required=False, choices=[("", "any")] + list(Category.choices))
    label = forms.ChoiceField(required=False)
    significance = forms.ChoiceField(required=False, choices=[("", "any"), ("significant", "significant"),
                                                               ("low", "low significance")])
    waiting = forms.BooleanField(required=False, label="Waiting for an advocate only")

    def __init__(self, *args, label_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["label"].choices = [("", "any")] + [(name, name) for name in label_choices]
