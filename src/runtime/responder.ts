/**
 * The reference runtime's "agent": a plain deterministic responder. No LLM and no network, so
 * tests can assert on exact replies and a pool can be exercised end to end on a laptop.
 */

export interface AgentPersona {
  agentName: string;
  instructions: string;
}

export interface HistoryEntry {
  role: "human" | "agent" | "system";
  from: string;
  text: string;
}

const QUOTE_MAX = 160;
const PERSONA_MAX = 80;

/** Collapses whitespace and cuts long text with an ellipsis, so replies stay one readable line. */
export function clip(text: string, max: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  const chars = [...flat]; // by code point, so an emoji is never cut in half
  return chars.length <= max
    ? flat
    : `${chars
        .slice(0, max - 1)
        .join("")
        .trimEnd()}…`;
}

/**
 * The role the instructions ask for ("You are a pirate who loves gold." → "a pirate who loves gold"),
 * or null when they do not name one.
 */
export function personaOf(instructions: string): string | null {
  const m = /\b(?:you are|you're|act as|pretend to be|your role is|play the role of)\s+([^.!?\n]+)/i.exec(instructions);
  const role = m?.[1]?.trim();
  return role ? clip(role, PERSONA_MAX) : null;
}

function ordinal(n: number): string {
  const mod100 = n % 100;
  if (mod100 >= 11 && mod100 <= 13) return `${n}th`;
  return `${n}${["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

/**
 * Reply to one human message, in character. Pure: the same inputs always give the same reply.
 * Shape: "<name>: As <persona>, ... you said “<quote>”. (That's your Nth message.)"
 */
export function respond(agent: AgentPersona, text: string, history: readonly HistoryEntry[]): string {
  const name = clip(agent.agentName, PERSONA_MAX) || "Agent";
  const persona = personaOf(agent.instructions);
  const brief = agent.instructions.trim() ? clip(agent.instructions, 60) : "";
  const nth = history.filter((h) => h.role === "human").length + 1;
  const quote = clip(text, QUOTE_MAX);

  const opener = persona ? `As ${persona}, I hear you` : brief ? `Following my instructions (“${brief}”), I hear you` : "I hear you";
  const ask = /\?\s*$/.test(text) ? " Good question; let me think about it in character." : "";
  return `${name}: ${opener}: you said “${quote}”.${ask} (That's your ${ordinal(nth)} message.)`;
}
