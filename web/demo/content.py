"""The demo's scripted people and conversations: agents, services, callers, call scripts and
webchats, and the plan of which call and chat happens when.

Everything here is fictional. Phone numbers come from Ofcom's ranges kept for drama (020 7946
0xxx, 0113 496 0xxx, 0114 496 0xxx, 0117 496 0xxx, 07700 900xxx), so no real person can be
rung; emails use the reserved example domains. The plan is drawn from a fixed seed, so two demos
differ only in their dates, which count back from the clock's now.
"""

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SEED = 20261123
MIN_CALLS = 10  # the complaint cases, the overdue calls and the special calls need them
MIN_CHATS = 3
MAX_CONTACTS = 2000
RECENT_DAYS = 25  # ordinary contacts: within this many days (plus a weekend), inside 30
SECONDS_PER_WORD = 0.36  # espeak-ng's default pace, to plan call lengths
MIN_SECONDS, MAX_SECONDS = 20.0, 90.0
COUNCIL = "Demo Borough Council"

CASE_1 = "CMP-2026-0142"  # council tax recovery complaint: calls and a chat, held by item
CASE_2 = "CMP-2026-0157"  # housing repairs complaint: held by the caller's number (a query)
CALLER_1 = "07700 900142"
CALLER_2 = "0113 496 0157"


@dataclass(frozen=True)
class Agent:
    id: str
    extension: str
    name: str
    voice: str  # espeak-ng voice
    pitch: float  # Hz, for the tone rendering
    services: tuple[str, ...]


AGENTS = (
    Agent("a101", "4101", "Priya", "en-gb+f2", 205.0, ("council-tax", "benefits")),
    Agent("a102", "4102", "Tom", "en-gb+m3", 115.0, ("council-tax", "parking")),
    Agent("a103", "4103", "Grace", "en-gb+f4", 220.0, ("council-tax", "waste")),
    Agent("a104", "4104", "Daniel", "en-gb+m1", 105.0, ("housing-repairs", "waste")),
    Agent("a105", "4105", "Aisha", "en-gb+f5", 195.0, ("housing-repairs", "adult-social-care")),
    Agent("a106", "4106", "Gareth", "en-gb+m7", 125.0, ("parking", "benefits")),
)

SERVICES = {  # service: (spoken name, queue, the council's number for it)
    "council-tax": ("council tax", "CT-General", "020 7946 0100"),
    "waste": ("waste and recycling", "Waste-Recycling", "020 7946 0200"),
    "housing-repairs": ("housing repairs", "Housing-Repairs", "020 7946 0300"),
    "parking": ("parking services", "Parking-PCN", "020 7946 0400"),
    "benefits": ("benefits", "Benefits-HB", "020 7946 0500"),
    "adult-social-care": ("adult social care", "ASC-FrontDoor", "020 7946 0600"),
}
CALLER_RANGES = ("020 7946 0", "0113 496 0", "0114 496 0", "0117 496 0", "07700 900")


@dataclass(frozen=True)
class Line:
    speaker: str  # "agent" or "caller"
    text: str
    card: bool = False  # card details read out: silenced at ingest (pci_redactions)


@dataclass(frozen=True)
class Script:
    service: str
    outbound: bool
    caller_voice: str
    caller_pitch: float
    opening: tuple[Line, ...]  # always said
    middle: tuple[Line, ...]  # a prefix of it is said, to vary the length
    card: bool = False  # has card lines (said whole, never cut)


def _a(text: str, card: bool = False) -> Line:
    return Line("agent", text, card)


def _c(text: str, card: bool = False) -> Line:
    return Line("caller", text, card)


GREETING = "Hello, {service}, {council}, you're speaking to {agent}. How can I help?"
CLOSING_IN = (_a("Is there anything else I can help with today?"),
              _c("No, that's everything. Thanks for your help."),
              _a("You're welcome. Thanks for calling, goodbye."))
CLOSING_OUT = (_a("Thanks for your time. Have a good day."), _c("You too. Bye now."))
_PAYMENT = (
    _a("Please read me the long number on the front of the card."),
    _c("Four one one one, one one one one, one one one one, one one one one.", card=True),
    _a("And the expiry date, and the three digits on the back?", card=True),
    _c("Twelve twenty eight, and the code is one two three.", card=True),
    _a("Thank you, that payment has gone through. I'll read you the receipt reference."),
)

SCRIPTS: dict[str, Script] = {
    "ct-moving": Script("council-tax", False, "en-gb-x-rp+f3", 230.0, (
        _c("Hi, I'm moving out of my flat at the end of the month and need to tell you."),
        _a("No problem. Can I take the account reference from your latest bill, please?"),
        _c("Yes, it's on the letter here. Six zero four, two two eight, one nine.")), (
        _a("Thank you. What date are you moving out, and do you have a forwarding address?"),
        _c("The twenty eighth. I'm moving in with my sister for a while."),
        _a("I've closed the account from the twenty eighth. A final bill will follow."),
        _c("Will I get anything back? I paid the whole year in April."),
        _a("Yes. Any credit is refunded once the final bill is issued."),
        _c("That's good to know, thank you."))),
    "ct-payment": Script("council-tax", False, "en-gb-scotland+m2", 130.0, (
        _c("I got a reminder letter and I'd like to pay what I owe today, by card."),
        _a("Of course. The balance is one hundred and twelve pounds fifty. Shall I take it now?"),
        _c("Yes please."), *_PAYMENT), (), card=True),
    "ct-complaint": Script("council-tax", False, "en-gb+f3", 240.0, (
        _c("I'm ringing again about the enforcement letter. I've kept to my payment plan."),
        _a("I'm sorry to hear that. Let me look at the account. Can you confirm your postcode?"),
        _c("It's L S six, four A B.")), (
        _a("Thank you. I can see the plan, and two payments were not matched to your account."),
        _c("So it's your mistake, not mine. I've been worried sick about this."),
        _a("I understand. I'll stop the recovery action today and ask the team to fix it."),
        _c("I want to make a formal complaint about how this has been handled."),
        _a("You can, and I'll log it now. You'll get a reply within ten working days."),
        _c("Right. I'll wait to hear, then."))),
    "waste-missed": Script("waste", False, "en-gb-x-gbcwmd+m4", 120.0, (
        _c("Our green recycling bin wasn't emptied on Tuesday, and it's the second time."),
        _a("I'm sorry about that. Can I take the address, please?"),
        _c("Twelve Mill Lane.")), (
        _a("Thank you. The crew reported the bin wasn't out, but I'll book a return visit."),
        _c("It was definitely out by seven, it always is."),
        _a("I've noted that on the report. The crew will come back by Friday."),
        _c("Thanks. I'll leave it out until then."))),
    "waste-bulky": Script("waste", False, "en-gb+f1", 210.0, (
        _c("I'd like to book a collection for an old sofa and a fridge."),
        _a("We can do that. It's thirty pounds for up to three items.")), (
        _c("That's fine. Any weekday next week suits me."),
        _a("I have Wednesday. Leave them at the front of the property by seven."),
        _c("Great. Do I need to do anything with the fridge?"),
        _a("Just make sure it's empty and the door is taped shut."),
        _c("Will do. Thanks very much."))),
    "repairs-boiler": Script("housing-repairs", False, "en-gb-x-gbclan+m2", 110.0, (
        _c("The boiler in my flat has stopped working again and we've got no hot water."),
        _a("I'm sorry. Is there any heating, and is anyone in the household vulnerable?"),
        _c("No heating. My son has asthma and the flat is getting cold and damp.")), (
        _a("I'll raise an emergency repair. An engineer will attend within twenty four hours."),
        _c("That's what I was told last week, and nobody came."),
        _a("I can see the last job was cancelled. I'll flag this to the repairs supervisor."),
        _c("I'm not happy with this at all. I want it written down."),
        _a("It's recorded on the job, and the supervisor will call you back today."))),
    "repairs-callback": Script("housing-repairs", True, "en-gb+f3", 235.0, (
        _a("Hello, this is {agent} from {council} repairs, about your kitchen leak."),
        _c("Oh yes, thanks for calling back.")), (
        _a("We can send a plumber on Thursday morning, between eight and twelve."),
        _c("Thursday's fine, I work from home."),
        _a("Great. They'll ring about thirty minutes before they arrive."),
        _c("Perfect, thank you."))),
    "parking-challenge": Script("parking", False, "en-gb-scotland+m2", 130.0, (
        _c("I've had a parking ticket on Station Road, but I was loading, which is allowed."),
        _a("You can challenge it. Do you have the penalty charge notice number?"),
        _c("Yes, it's D B two nine four one seven six.")), (
        _a("Thanks. Send the challenge online with a photo of the delivery note."),
        _c("Will the price go up while I wait?"),
        _a("No. The discount is held while we consider a challenge made in fourteen days."),
        _c("Okay, I'll do that tonight."))),
    "parking-payment": Script("parking", False, "en-gb-x-rp+f3", 230.0, (
        _c("I'd like to pay a parking fine, please. I have the notice here."),
        _a("Of course. At the discounted rate that's thirty five pounds."),
        _c("Fine, I'll pay by card."), *_PAYMENT), (), card=True),
    "benefits-change": Script("benefits", False, "en-gb+f1", 210.0, (
        _c("My hours at work have gone down, so I need to update my housing benefit claim."),
        _a("Thanks for letting us know. When did your hours change?"),
        _c("From the first of this month. I'm on twenty hours a week now.")), (
        _a("Please upload your last two payslips on our website and we'll reassess the claim."),
        _c("How long will that take?"),
        _a("Usually about two weeks. We'll write to you with the new amount."),
        _c("Okay, thank you."))),
    "benefits-ctr": Script("benefits", False, "en-gb-x-gbcwmd+m4", 120.0, (
        _c("I've just lost my job. Can I get help with my council tax?"),
        _a("I'm sorry to hear that. You may qualify for council tax reduction.")), (
        _c("I don't know where to start with it."),
        _a("I can start the claim with you now. I'll need your national insurance number."),
        _c("I've got it here somewhere. Hang on."),
        _a("No rush. We'll also ask about any savings you have."))),
    "asc-assessment": Script("adult-social-care", False, "en-gb-x-rp+f3", 230.0, (
        _c("I'm calling about my mum. She's had a fall and she's struggling at home."),
        _a("I'm sorry to hear that. Is she safe at the moment?"),
        _c("She's home now, but she can't manage the stairs and she's very anxious.")), (
        _a("I'll refer her for a care needs assessment. The team will call within three days."),
        _c("Could they also look at a key safe? I can't get there every day."),
        _a("Yes, I'll add that to the referral, along with a falls alarm."),
        _c("Thank you, that's a weight off my mind."))),
}
ORDINARY = ("ct-moving", "waste-missed", "waste-bulky", "repairs-callback",
            "parking-challenge", "benefits-change", "benefits-ctr", "ct-moving",
            "waste-missed", "benefits-change")


def opening_lines(script: Script, agent: Agent) -> tuple[Line, ...]:
    """The script's opening with the greeting (inbound) and the agent's name filled in."""
    name, _, _ = SERVICES[script.service]
    fill = {"service": name, "council": COUNCIL, "agent": agent.name}
    lines = tuple(Line(ln.speaker, ln.text.format(**fill), ln.card) for ln in script.opening)
    if script.outbound:
        return lines
    return (_a(GREETING.format(**fill)), *lines)


def estimate(lines: tuple[Line, ...]) -> float:
    """Seconds the lines take when spoken, with the pauses between them."""
    return sum(len(ln.text.split()) * SECONDS_PER_WORD + 0.8 for ln in lines) + 0.5


@dataclass(frozen=True)
class CallPlan:
    external_id: str
    started_at: datetime
    script: Script
    agent: Agent
    caller_number: str
    lines: tuple[Line, ...]
    stereo: bool
    hold: float  # seconds on hold after the opening (0: none)
    special_category: bool = False
    tags: tuple[str, ...] = ()
    case: str | None = None  # the complaint case this call belongs to

    @property
    def service(self) -> str:
        return self.script.service

    @property
    def pci(self) -> bool:
        return any(ln.card for ln in self.lines)

    def metadata(self, duration: float, pci: list[tuple[float, float]]) -> dict[str, object]:
        """The metadata a telephony system would send with the recording."""
        _, queue, council_number = SERVICES[self.service]
        outbound = self.script.outbound
        data: dict[str, object] = {
            "external_id": self.external_id,
            "started_at": self.started_at.isoformat(),
            "ended_at": (self.started_at + timedelta(seconds=duration)).isoformat(),
            "direction": "outbound" if outbound else "inbound",
            "caller_number": council_number if outbound else self.caller_number,
            "called_number": self.caller_number if outbound else council_number,
            "agent_id": self.agent.id, "agent_extension": self.agent.extension,
            "service": self.service, "queue": queue,
            "special_category": self.special_category, "tags": list(self.tags),
        }
        if pci:
            data["pci_redactions"] = [{"start": round(a, 2), "end": round(min(b, duration), 2)}
                                      for a, b in pci]
        return data


@dataclass
class _Drawer:
    rng: random.Random
    now: datetime
    used_numbers: set[str] = field(default_factory=lambda: {CALLER_1, CALLER_2})

    def number(self) -> str:
        while True:
            prefix = self.rng.choice(CALLER_RANGES)
            number = f"{prefix}{self.rng.randrange(0, 1000):03d}"
            if number.replace(" ", "") not in {n.replace(" ", "") for n in self.used_numbers}:
                self.used_numbers.add(number)
                return number

    def moment(self, days_back: float) -> datetime:
        """Office hours (08:30 to 17:00 UTC), on a weekday about ``days_back`` days ago."""
        day = (self.now - timedelta(days=days_back)).date()
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        start = datetime(day.year, day.month, day.day, 8, 30, tzinfo=UTC)
        moment = start + timedelta(seconds=self.rng.randrange(0, int(8.5 * 3600)))
        if moment > self.now - timedelta(hours=2):
            return self.moment(days_back + 1)
        return moment

    def agent_for(self, service: str) -> Agent:
        return self.rng.choice([a for a in AGENTS if service in a.services])

    def call(self, n: int, key: str, days_back: float, *, number: str | None = None,
             agent: Agent | None = None, stereo: bool | None = None, case: str | None = None,
             special: bool = False, tags: tuple[str, ...] = ()) -> CallPlan:
        script = SCRIPTS[key]
        agent = agent or self.agent_for(script.service)
        target = self.rng.uniform(MIN_SECONDS + 6, MAX_SECONDS - 5)
        lines = opening_lines(script, agent)
        closing = CLOSING_OUT if script.outbound else CLOSING_IN
        for line in script.middle:
            if estimate((*lines, line, *closing)) > target:
                break
            lines = (*lines, line)
        lines = (*lines, *closing)
        spare = min(target, MAX_SECONDS - 15) - estimate(lines)
        hold = round(min(spare, 25.0), 1) if spare > 3 and self.rng.random() < 0.5 else 0.0
        if estimate(lines) + hold < MIN_SECONDS + 4:
            hold = round(MIN_SECONDS + 4 - estimate(lines), 1)
        return CallPlan(
            external_id=f"demo-call-{n:04d}", started_at=self.moment(days_back), script=script,
            agent=agent, caller_number=number or self.number(), lines=lines,
            stereo=(n % 3 == 1) if stereo is None else stereo, hold=hold,
            special_category=special, tags=tags, case=case)


def overdue_count(calls: int) -> int:
    """How many unheld calls the demo makes past a 30-day window (4 of 60)."""
    return max(2, round(calls / 15))


def plan_calls(calls: int, now: datetime) -> list[CallPlan]:
    """The calls, oldest first: the complaint cases' calls, a few overdue ones, two card
    payments, one special-category call, then ordinary calls over the last four weeks."""
    d = _Drawer(random.Random(SEED), now)  # noqa: S311  (a reproducible plan, not a secret)
    grace = AGENTS[2]  # handles the council tax complaint's first calls
    plans = [
        d.call(1, "ct-complaint", 33.5, number=CALLER_1, agent=grace, stereo=False,
               case=CASE_1, tags=("complaint",)),
        d.call(2, "ct-complaint", 19, number=CALLER_1, agent=grace, stereo=True, case=CASE_1,
               tags=("complaint",)),
        d.call(3, "ct-complaint", 5, number=CALLER_1, agent=AGENTS[0], stereo=False,
               case=CASE_1, tags=("complaint", "escalated")),
        d.call(4, "repairs-boiler", 24, number=CALLER_2, stereo=True, case=CASE_2),
        d.call(5, "repairs-boiler", 9, number=CALLER_2, stereo=False, case=CASE_2,
               tags=("complaint",)),
        d.call(6, "parking-payment", 12, tags=("payment",)),
        d.call(7, "ct-payment", 3, tags=("payment",)),
        d.call(8, "asc-assessment", 7, special=True, tags=("safeguarding-check",)),
    ]
    for k in range(overdue_count(calls)):
        plans.append(d.call(len(plans) + 1, ORDINARY[k % len(ORDINARY)],
                            31 + 3 * k / max(1, overdue_count(calls) - 1)))
    while len(plans) < calls:
        n = len(plans) + 1
        plans.append(d.call(n, ORDINARY[n % len(ORDINARY)], d.rng.uniform(0.5, RECENT_DAYS)))
    return sorted(plans, key=lambda p: p.started_at)


# -- webchats ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    name: str
    email: str
    postcode: str


CUSTOMERS = (
    Customer("Margaret Ellison", "m.ellison@example.org", "LS6 4AB"),
    Customer("Jamal Okafor", "jamal.okafor@example.com", "LS7 2QT"),
    Customer("Siobhan Byrne", "siobhan.b@example.net", "LS8 1HX"),
    Customer("Wei Chen", "wei.chen@example.org", "LS9 6PD"),
    Customer("Harriet Cole", "hcole@example.com", "LS11 5RJ"),
    Customer("Tomasz Nowak", "t.nowak@example.net", "LS12 3AE"),
    Customer("Fatima Hussain", "fatima.h@example.org", "LS13 4BL"),
    Customer("Oliver Grant", "oliver.grant@example.com", "LS15 8NW"),
    Customer("Ruth Adeyemi", "ruth.adeyemi@example.net", "LS16 7GH"),
    Customer("Ben Whitaker", "ben.w@example.org", "LS17 9DS"),
)
CARD_TEXT = "Can I just pay here? My card is 4111 1111 1111 1111."

CHATS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {  # key: (service, messages)
    "ct-complaint": ("council-tax", (
        ("customer", "I need to complain. I've had an enforcement letter but I've paid every "
                     "instalment of my plan."),
        ("agent", "I'm sorry you've had that letter. Can you give me the account reference?"),
        ("customer", "60422819. I've phoned three times about this now."),
        ("agent", "Thank you. I can see two payments that weren't matched to the account. "
                  "I've put the recovery on hold."),
        ("customer", "I want this treated as a formal complaint."),
        ("agent", "I've logged it as complaint CMP-2026-0142. You'll get a reply within ten "
                  "working days."))),
    "waste-missed": ("waste", (
        ("customer", "Hi, our black bin wasn't collected this week."),
        ("agent", "Sorry about that. What's the address?"),
        ("customer", "14 Beech Grove."),
        ("agent", "Thanks. I've booked a return collection for Thursday."))),
    "waste-garden": ("waste", (
        ("customer", "How do I sign up for garden waste collections?"),
        ("agent", "It's a yearly subscription of forty pounds. I can send you the link."),
        ("customer", "Yes please."),
        ("agent", "Done: the link is in your email. Collections start two weeks after "
                  "you sign up."))),
    "repairs-damp": ("housing-repairs", (
        ("customer", "There's black mould coming back in the bedroom again."),
        ("agent", "I'm sorry to hear that. Is it in more than one room?"),
        ("customer", "Bedroom and bathroom. We've cleaned it but it keeps returning."),
        ("agent", "I've raised a damp and mould inspection. A surveyor will contact you within "
                  "five working days."))),
    "parking-permit": ("parking", (
        ("customer", "My residents' permit runs out next week. Can I renew online?"),
        ("agent", "Yes, through your parking account. You'll need your vehicle's V5C."),
        ("customer", "I've changed my car since last year."),
        ("agent", "That's fine, add the new registration when you renew."))),
    "parking-card": ("parking", (
        ("customer", "I want to pay a parking fine."),
        ("agent", "I can send you the secure payment link for that."),
        ("customer", CARD_TEXT),
        ("agent", "Please don't type card details into the chat: I've removed them. Use the "
                  "secure link I've just sent instead."),
        ("customer", "Oh sorry. Paid now through the link, thanks."))),
    "benefits-evidence": ("benefits", (
        ("customer", "I was asked for evidence for my housing benefit claim. What counts?"),
        ("agent", "Your last two payslips and a recent bank statement."),
        ("customer", "Can I upload photos of them?"),
        ("agent", "Yes, clear photos are fine. Use the upload page in your claim."))),
    "ct-discount": ("council-tax", (
        ("customer", "I live on my own now. Can I get the single person discount?"),
        ("agent", "Yes, it's twenty five percent off. From what date do you live alone?"),
        ("customer", "Since the 1st of last month."),
        ("agent", "I've applied it from that date. A new bill will follow."))),
}
_BOT_OPENING = "Hello, I'm the {council} assistant. What can I help you with today?"


@dataclass(frozen=True)
class ChatPlan:
    external_id: str
    started_at: datetime
    service: str
    agent: Agent
    customer: Customer
    messages: tuple[tuple[str, str], ...]
    case: str | None = None

    def payload(self) -> dict[str, object]:
        """The transcript as a webchat platform would push it (POST /v1/transcripts)."""
        at = self.started_at
        messages: list[dict[str, object]] = [
            {"at": at.isoformat(), "from": "bot", "name": "Assistant",
             "text": _BOT_OPENING.format(council=COUNCIL)},
            {"at": (at + timedelta(seconds=40)).isoformat(), "from": "system", "name": None,
             "text": f"You are now connected to {self.agent.name}."}]
        seconds = 45
        for sender, text in self.messages:
            seconds += 20 + len(text) // 2
            name = self.customer.name.split()[0] if sender == "customer" else self.agent.name
            messages.append({"at": (at + timedelta(seconds=seconds)).isoformat(),
                             "from": sender, "name": name, "text": text})
        return {
            "external_id": self.external_id, "started_at": at.isoformat(),
            "ended_at": (at + timedelta(seconds=seconds + 30)).isoformat(),
            "customer": {"name": self.customer.name, "email": self.customer.email,
                         "postcode": self.customer.postcode},
            "agent_id": self.agent.id, "service": self.service,
            "tags": ["complaint"] if self.case else [], "messages": messages,
        }


OLD_CHAT_DAYS = 745  # one chat past a 730-day window: overdue for the next purge pass


def plan_chats(chats: int, now: datetime) -> list[ChatPlan]:
    """The chats, oldest first: the council tax complaint's chat, the one with a card number,
    one old enough to be purged, then chats over the last four weeks."""
    d = _Drawer(random.Random(SEED + 1), now)  # noqa: S311  (as above)
    keys = [k for k in CHATS if k not in ("ct-complaint", "parking-card")]

    def chat(n: int, key: str, days_back: float, customer: Customer,
             case: str | None = None) -> ChatPlan:
        service, messages = CHATS[key]
        return ChatPlan(f"demo-chat-{n:04d}", d.moment(days_back), service,
                        d.agent_for(service), customer, messages, case)

    plans = [chat(1, "ct-complaint", 4, CUSTOMERS[0], CASE_1),
             chat(2, "parking-card", 10, CUSTOMERS[1]),
             chat(3, "ct-discount", OLD_CHAT_DAYS, CUSTOMERS[2])]
    while len(plans) < chats:
        n = len(plans) + 1
        plans.append(chat(n, keys[n % len(keys)], d.rng.uniform(0.5, RECENT_DAYS),
                          CUSTOMERS[n % len(CUSTOMERS)]))
    return sorted(plans, key=lambda p: p.started_at)
