from typing import Any

import pytest
from parley_sender.domain.templates import (
    Template,
    TemplateCatalogue,
    TemplateProblem,
    TemplateRenderer,
    language_candidates,
    validate_send,
)

ORDER = Template.from_graph(
    {
        "name": "order_update",
        "language": "en_US",
        "category": "UTILITY",
        "status": "APPROVED",
        "id": "1",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
            {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today."},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}"},
                    {"type": "QUICK_REPLY", "text": "Stop promotions"},
                ],
            },
        ],
    }
)
NAMED = Template.from_graph(
    {
        "name": "welcome",
        "language": "pt_BR",
        "category": "MARKETING",
        "status": "APPROVED",
        "parameter_format": "NAMED",
        "components": [{"type": "BODY", "text": "Olá {{first_name}}, use {{code}}!"}],
    }
)
MEDIA = Template.from_graph(
    {
        "name": "receipt",
        "language": "en",
        "category": "UTILITY",
        "status": "APPROVED",
        "components": [{"type": "HEADER", "format": "DOCUMENT"}, {"type": "BODY", "text": "Your receipt."}],
    }
)
OTP = Template.from_graph(
    {
        "name": "otp",
        "language": "en",
        "category": "AUTHENTICATION",
        "status": "APPROVED",
        "components": [
            {"type": "BODY", "text": "{{1}} is your code."},
            {"type": "BUTTONS", "buttons": [{"type": "COPY_CODE", "text": "Copy"}]},
        ],
    }
)
CAT = TemplateCatalogue.of([ORDER, NAMED, MEDIA, OTP])


def _order(
    header: Any = "A-1", body: tuple[str, ...] = ("Ann", "A-1"), url: Any = "A-1"
) -> list[dict[str, Any]]:
    comps: list[dict[str, Any]] = [
        {"type": "body", "parameters": [{"type": "text", "text": b} for b in body]}
    ]
    if header is not None:
        comps.append({"type": "header", "parameters": [{"type": "text", "text": header}]})
    if url is not None:
        comps.append(
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": url}]}
        )
    return comps


def _problem(
    name: str, lang: str, comps: list[dict[str, Any]], catalogue: TemplateCatalogue = CAT
) -> TemplateProblem:
    with pytest.raises(TemplateProblem) as info:
        validate_send(catalogue, name, lang, comps)
    return info.value


def test_preview_renders_the_final_text() -> None:
    _, rendered = validate_send(CAT, "order_update", "en_US", _order())
    assert rendered.text == (
        "Order A-1\nHi Ann, your order A-1 ships today.\nReply STOP to opt out\n"
        "[Track → https://shop.example/track/A-1]\n[Stop promotions]"
    )


def test_missing_template_is_refused_with_132001() -> None:
    assert _problem("nope", "en_US", []).code == 132001


def test_language_fallback_configured_then_base_language() -> None:
    assert language_candidates("en_GB", {"en_GB": ["en_US"]}) == ["en_GB", "en_US", "en"]
    template, _ = validate_send(CAT, "order_update", "en_GB", _order(), {"en_GB": ["en_US"]})
    assert template.language == "en_US"
    template, _ = validate_send(
        CAT,
        "receipt",
        "en_AU",
        [{"type": "header", "parameters": [{"type": "document", "document": {"link": "https://x/r.pdf"}}]}],
    )
    assert template.language == "en"
    assert _problem("order_update", "en_GB", _order()).reason == "template_missing"


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        ("PAUSED", "template_paused", 132015),
        ("DISABLED", "template_disabled", 132016),
        ("PENDING", "template_not_approved", 132001),
        ("REJECTED", "template_not_approved", 132001),
    ],
)
def test_only_approved_templates_are_sent(status: str, reason: str, code: int) -> None:
    cat = TemplateCatalogue.of([Template(**{**ORDER.__dict__, "status": status})])
    problem = _problem("order_update", "en_US", _order(), cat)
    assert (problem.reason, problem.code) == (reason, code)


def test_body_parameter_count_mismatch_is_132000() -> None:
    assert _problem("order_update", "en_US", _order(body=("Ann",))).code == 132000


def test_missing_header_parameter_is_refused() -> None:
    assert _problem("order_update", "en_US", _order(header=None)).reason == "parameter_mismatch"


def test_url_button_needs_its_parameter() -> None:
    assert _problem("order_update", "en_US", _order(url=None)).reason == "button_mismatch"


def test_button_index_that_does_not_exist_is_refused() -> None:
    comps = [*_order(), {"type": "button", "sub_type": "url", "index": "7", "parameters": []}]
    assert _problem("order_update", "en_US", comps).reason == "button_mismatch"


def test_header_text_over_60_characters_is_refused() -> None:
    assert _problem("order_update", "en_US", _order(header="x" * 60)).code == 132005


def test_body_parameter_with_newline_is_refused() -> None:
    assert _problem("order_update", "en_US", _order(body=("Ann\nB", "A-1"))).code == 132012


def test_body_over_1024_characters_is_refused() -> None:
    assert _problem("order_update", "en_US", _order(body=("x" * 1020, "A-1"))).code == 132005


def test_named_parameters_must_match_by_name() -> None:
    ok = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Ana"},
                {"type": "text", "parameter_name": "code", "text": "X1"},
            ],
        }
    ]
    _, rendered = validate_send(CAT, "welcome", "pt_BR", ok)
    assert rendered.body == "Olá Ana, use X1!"
    wrong = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "name", "text": "Ana"},
                {"type": "text", "parameter_name": "code", "text": "X1"},
            ],
        }
    ]
    assert _problem("welcome", "pt_BR", wrong).code == 132000
    positional = [
        {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "X"}]}
    ]
    assert _problem("welcome", "pt_BR", positional).code == 132012


def test_positional_template_rejects_parameter_names() -> None:
    comps = _order()
    comps[0]["parameters"][0]["parameter_name"] = "first_name"
    assert _problem("order_update", "en_US", comps).code == 132012


def test_media_header_needs_a_media_parameter_with_link_or_id() -> None:
    assert _problem("receipt", "en", []).reason == "header_media"
    no_link = [{"type": "header", "parameters": [{"type": "document", "document": {}}]}]
    assert _problem("receipt", "en", no_link).code == 132012
    wrong_kind = [{"type": "header", "parameters": [{"type": "image", "image": {"id": "9"}}]}]
    assert _problem("receipt", "en", wrong_kind).reason == "header_media"
    _, rendered = validate_send(
        CAT,
        "receipt",
        "en",
        [{"type": "header", "parameters": [{"type": "document", "document": {"id": "9"}}]}],
    )
    assert rendered.header_media == "DOCUMENT"


def test_copy_code_button_length_limit() -> None:
    body = {"type": "body", "parameters": [{"type": "text", "text": "123456"}]}

    def button(code: str) -> dict[str, Any]:
        return {
            "type": "button",
            "sub_type": "copy_code",
            "index": 0,
            "parameters": [{"type": "coupon_code", "coupon_code": code}],
        }

    _, rendered = validate_send(CAT, "otp", "en", [body, button("123456")])
    assert rendered.buttons == ("Copy: 123456",)
    assert _problem("otp", "en", [body, button("x" * 21)]).code == 132005


def test_parameters_for_a_header_the_template_lacks_are_refused() -> None:
    comps = [
        {"type": "header", "parameters": [{"type": "text", "text": "x"}]},
        {"type": "body", "parameters": [{"type": "text", "text": "1"}]},
        {
            "type": "button",
            "sub_type": "copy_code",
            "index": 0,
            "parameters": [{"type": "coupon_code", "coupon_code": "1"}],
        },
    ]
    assert _problem("otp", "en", comps).code == 132000


def test_renderer_is_usable_without_a_catalogue() -> None:
    rendered = TemplateRenderer().render(
        NAMED,
        [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "parameter_name": "code", "text": "Z"},
                    {"type": "text", "parameter_name": "first_name", "text": "Bo"},
                ],
            }
        ],
    )
    assert rendered.text == "Olá Bo, use Z!"
