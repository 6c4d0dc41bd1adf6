import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { clip, personaOf, respond } from "./responder.ts";
import type { HistoryEntry } from "./responder.ts";

describe("respond", () => {
  const pirate = { agentName: "Captain Bob", instructions: "You are a pirate who loves gold. Be brief." };

  it("is deterministic", () => {
    assert.equal(respond(pirate, "hello", []), respond(pirate, "hello", []));
  });

  it("starts with the agent's name, quotes the message and speaks as the persona", () => {
    const reply = respond(pirate, "Where is the treasure?", []);
    assert.equal(
      reply,
      "Captain Bob: As a pirate who loves gold, I hear you: you said “Where is the treasure?”. " +
        "Good question; let me think about it in character. (That's your 1st message.)",
    );
  });

  it("reflects instructions that name no role", () => {
    const reply = respond({ agentName: "Ada", instructions: "Always answer in haiku." }, "hi", []);
    assert.match(reply, /^Ada: Following my instructions \(“Always answer in haiku\.”\), I hear you: you said “hi”\./);
  });

  it("works without instructions", () => {
    assert.equal(respond({ agentName: "Ada", instructions: "" }, "hi", []), "Ada: I hear you: you said “hi”. (That's your 1st message.)");
  });

  it("counts the human messages in the history", () => {
    const history: HistoryEntry[] = [
      { role: "human", from: "human", text: "one" },
      { role: "agent", from: "Ada", text: "…" },
      { role: "system", from: "room", text: "Bob joined." },
      { role: "human", from: "human", text: "two" },
    ];
    assert.match(respond({ agentName: "Ada", instructions: "" }, "three", history), /That's your 3rd message\.\)$/);
    const many = Array.from({ length: 10 }, () => ({ role: "human" as const, from: "human", text: "x" }));
    assert.match(respond({ agentName: "Ada", instructions: "" }, "x", many), /11th message/);
  });

  it("clips long messages and flattens whitespace", () => {
    const reply = respond({ agentName: "Ada", instructions: "" }, `a\n\n${"b".repeat(500)}`, []);
    assert.ok(reply.length < 300, reply);
    assert.match(reply, /“a b+…”/);
  });
});

describe("personaOf / clip", () => {
  it("finds the role in common phrasings", () => {
    assert.equal(personaOf("You are a pirate."), "a pirate");
    assert.equal(personaOf("you're a grumpy librarian! Never shout."), "a grumpy librarian");
    assert.equal(personaOf("Please act as a travel agent for Lisbon"), "a travel agent for Lisbon");
    assert.equal(personaOf("Answer briefly."), null);
    assert.equal(personaOf(""), null);
  });

  it("clips by code point", () => {
    assert.equal(clip("  x  y ", 10), "x y");
    assert.equal(clip("😀😀😀😀", 3), "😀😀…");
  });
});
