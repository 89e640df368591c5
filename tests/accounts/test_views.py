"""Login, logout, password reset and the profile page, for every persona of the clinic."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from accounts.models import Role, User
from tests.factories import PASSWORD, make_user

PERSONAS = ["participant", "lead", "co", "admin", "outsider_participant", "outsider_therapist"]


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # The personas' passwords are hashed on creation; PBKDF2 would make each clinic cost seconds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- login and logout ------------------------------------------------------------------------------


def test_login_page_renders_with_labelled_fields(client, db):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert f'href="{reverse("password_reset")}"' in html


@pytest.mark.parametrize("persona", PERSONAS)
def test_login_with_the_right_password_goes_home(client, clinic, persona):
    user = getattr(clinic, persona)

    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert client.get(reverse("home")).context["user"] == user


def test_login_keeps_the_next_page(client, clinic):
    target = reverse("session_detail", args=[clinic.group_session.id])

    response = client.post(
        f"{reverse('login')}?next={target}",
        {"username": clinic.participant.username, "password": PASSWORD, "next": target},
    )

    assert response["Location"] == target


def test_login_with_a_wrong_password_shows_an_error(client, clinic):
    response = client.post(reverse("login"), {"username": clinic.participant.username, "password": "nope-nope-nope"})

    assert response.status_code == 200
    html = response.content.decode()
    assert 'role="alert"' in html
    assert "Please enter a correct username and password" in html
    assert "_auth_user_id" not in client.session


def test_login_page_sends_a_logged_in_user_home(client, clinic):
    client.force_login(clinic.participant)

    response = client.get(reverse("login"))

    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_logout_refuses_get(client, clinic):
    client.force_login(clinic.participant)

    response = client.get(reverse("logout"))

    assert response.status_code == 405
    assert "_auth_user_id" in client.session


def test_logout_by_post_ends_the_session_and_says_so(client, clinic):
    client.force_login(clinic.participant)

    response = client.post(reverse("logout"), follow=True)

    assert response.redirect_chain == [(reverse("login"), 302)]
    assert "You have logged out." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_header_shows_display_name_and_a_post_logout_form(client, clinic):
    client.force_login(clinic.participant)

    html = client.get(reverse("home")).content.decode()

    assert "Signed in as <strong>Pat P.</strong>" in html
    assert re.search(
        r'<form class="logout-form" method="post" action="/accounts/logout/">\s*'
        r'<input type="hidden" name="csrfmiddlewaretoken"',
        html,
    )
    assert '<a class="skip-link" href="#main">' in html
    assert '<main id="main"' in html and '<nav class="site-nav" aria-label="Main">' in html


@pytest.mark.parametrize(("is_staff", "shown"), [(True, True), (False, False)])
def test_header_admin_link_only_for_django_staff(client, clinic, is_staff, shown):
    clinic.admin.is_staff = is_staff
    clinic.admin.save()
    client.force_login(clinic.admin)

    html = client.get(reverse("profile")).content.decode()

    assert (f'href="{reverse("admin:index")}"' in html) is shown


# --- password reset ---------------------------------------------------------------------------------


def test_password_reset_flow_sends_an_email_whose_link_sets_a_new_password(client, clinic):
    user = clinic.participant

    response = client.post(reverse("password_reset"), {"email": user.email})

    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_done")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [user.email]
    assert message.subject == "Reset your password"
    link = re.search(r"https?://testserver(/accounts/reset/\S+/)", message.body).group(1)

    form_page = client.get(link, follow=True)
    assert "Choose a new password" in form_page.content.decode()
    set_url = form_page.redirect_chain[-1][0]
    done = client.post(
        set_url, {"new_password1": "a-fresh-long-passphrase", "new_password2": "a-fresh-long-passphrase"}
    )

    assert done["Location"] == reverse("password_reset_complete")
    assert client.get(reverse("password_reset_complete")).status_code == 200
    client.logout()
    assert client.login(username=user.username, password="a-fresh-long-passphrase")


def test_password_reset_link_works_only_once(client, clinic):
    client.post(reverse("password_reset"), {"email": clinic.participant.email})
    link = re.search(r"https?://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    set_url = client.get(link, follow=True).redirect_chain[-1][0]
    client.post(set_url, {"new_password1": "a-fresh-long-passphrase", "new_password2": "a-fresh-long-passphrase"})

    again = client.get(link, follow=True)

    assert "This link no longer works" in again.content.decode()


def test_password_reset_for_an_unknown_address_looks_the_same_and_sends_nothing(client, db):
    response = client.post(reverse("password_reset"), {"email": "nobody@example.org"})

    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_done")
    assert mail.outbox == []


def test_password_reset_email_reveals_nothing_about_care(client, clinic):
    client.post(reverse("password_reset"), {"email": clinic.participant.email})

    message = mail.outbox[0]
    text = f"{message.subject}\n{message.body}".lower()
    for word in ("iop", "therapy", "treatment", "group", "session", clinic.program.name.lower()):
        assert word not in text


def test_password_reset_pages_render(client, db):
    for name in ("password_reset", "password_reset_done", "password_reset_complete"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
    bad = client.get(reverse("password_reset_confirm", args=["MQ", "bad-token"]))
    assert bad.status_code == 200
    assert "This link no longer works" in bad.content.decode()


# --- profile -------------------------------------------------------------------------------------------


def test_profile_anonymous_redirects_to_login(client, db):
    response = client.get(reverse("profile"))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={reverse('profile')}"


@pytest.mark.parametrize("persona", PERSONAS)
def test_profile_shows_how_others_see_you(client, clinic, persona):
    user = getattr(clinic, persona)
    client.force_login(user)

    response = client.get(reverse("profile"))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'Others in your group see you as: <strong class="display-name">{user.display_name}</strong>' in html
    assert "They never see your full name, e-mail address or phone number" in html


def test_profile_shows_an_approved_alias_as_the_group_name(client, db):
    user = make_user(Role.PARTICIPANT, first="Quinn", last="Garcia", alias="River", alias_approved=True)
    client.force_login(user)

    html = client.get(reverse("profile")).content.decode()

    assert '<strong class="display-name">River</strong>' in html


def test_profile_explains_an_alias_waiting_for_approval(client, db):
    user = make_user(Role.PARTICIPANT, first="Skyler", last="Irwin", alias="Sky", alias_approved=False)
    client.force_login(user)

    html = client.get(reverse("profile")).content.decode()

    assert '<strong class="display-name">Skyler I.</strong>' in html
    assert "Your alias <strong>Sky</strong> is waiting for the clinic to approve it" in html


def test_profile_time_zone_select_is_labelled_and_lists_common_zones_first(client, clinic):
    client.force_login(clinic.participant)

    html = client.get(reverse("profile")).content.decode()

    assert '<label for="id_time_zone">Your time zone</label>' in html
    assert html.index('<optgroup label="Common">') < html.index('<optgroup label="All time zones">')
    assert '<option value="America/New_York" selected>US Eastern (New York)</option>' in html


def test_profile_time_zone_change_is_saved_and_changes_the_clock(client, clinic):
    client.force_login(clinic.participant)

    response = client.post(reverse("profile"), {"time_zone": "Asia/Tokyo"}, follow=True)

    assert response.redirect_chain == [(reverse("profile"), 302)]
    assert "Saved. Times are now shown in your new time zone." in response.content.decode()
    clinic.participant.refresh_from_db()
    assert clinic.participant.time_zone == "Asia/Tokyo"
    assert "Times are shown in <strong>Asia/Tokyo</strong>" in client.get(reverse("home")).content.decode()


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "EST5EDT; DROP TABLE"])
def test_profile_bad_time_zone_is_rejected(client, clinic, zone):
    client.force_login(clinic.participant)

    response = client.post(reverse("profile"), {"time_zone": zone})

    assert response.status_code == 200
    html = response.content.decode()
    assert 'aria-invalid="true"' in html
    assert 'class="errorlist" id="id_time_zone_error"' in html
    assert User.objects.get(pk=clinic.participant.pk).time_zone == "America/New_York"
