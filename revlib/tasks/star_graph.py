"""Star graph (Bachmann & Nagarajan): paths between the centre and a leaf of a star of arms."""

from __future__ import annotations

import random
import re

from pydantic import Field, model_validator

from revlib.core.records import Record
from revlib.tasks.base import Segment, TaskFamily, TaskKnobs


class StarKnobs(TaskKnobs):
    degree: int = Field(2, ge=2, description="arms leaving the centre")
    path_length: int = Field(4, ge=2, description="nodes on an arm, centre included")
    node_count: int = Field(50, ge=4, description="node labels are drawn from 0..node_count-1")

    @model_validator(mode="after")
    def _fits(self):
        need = self.degree * (self.path_length - 1) + 1
        if need > self.node_count:
            raise ValueError(f"node_count must be at least degree*(path_length-1)+1 = {need}")
        return self


# one step of a chain: "a>b" (centre to leaf) or "a<b" (leaf back to centre)
STEP = re.compile(r"^(\d+)([<>])(\d+)$")


def edges_text(edges: list) -> str:
    return " ".join(f"{a}>{b}" for a, b in edges)


def _path_str(path: list[int]) -> str:
    return ",".join(map(str, path))


class StarGraph(TaskFamily):
    """Steps are edges "a>b" (or "a<b"), one per line (the default splitter); the answer is a path, parsed into its
    nodes (`parse_answer`) and read as valid / first node right / correct (`answer_outcome`); a teacher writes the
    steps in four forms (`restyle_step`)."""

    name = "star_graph"
    Knobs = StarKnobs

    def sample_forward(self, rng: random.Random, index: int) -> Record:
        kn: StarKnobs = self.knobs
        nodes = rng.sample(range(kn.node_count), kn.degree * (kn.path_length - 1) + 1)
        centre, rest = nodes[0], nodes[1:]
        arms = [[centre] + rest[i * (kn.path_length - 1):(i + 1) * (kn.path_length - 1)] for i in range(kn.degree)]
        edges = [(a[j], a[j + 1]) for a in arms for j in range(len(a) - 1)]
        rng.shuffle(edges)
        goal_arm = rng.randrange(kn.degree)
        path = arms[goal_arm]
        goal = path[-1]
        pair_id = f"star-{index:06d}"
        edge_text = edges_text(edges)
        return Record(
            id=f"{pair_id}-f",
            pair_id=pair_id,
            direction="forward",
            task=self.name,
            question=f"Edges: {edge_text}. Path from centre {centre} to leaf {goal}?",
            reasoning="\n".join(f"{a}>{b}" for a, b in zip(path, path[1:])),
            answer=_path_str(path),
            gold=_path_str(path),
            meta={"edges": [list(e) for e in edges], "centre": centre, "goal": goal, "path": path},
        )

    def invert(self, forward: Record) -> Record:
        path = list(reversed(forward.meta["path"]))
        edge_text = edges_text(forward.meta["edges"])
        return Record(
            id=f"{forward.pair_id}-r",
            pair_id=forward.pair_id,
            direction="reverse",
            task=self.name,
            question=f"Edges: {edge_text}. Path from leaf {path[0]} back to centre?",
            reasoning="\n".join(f"{a}<{b}" for a, b in zip(path, path[1:])),
            answer=_path_str(path),
            gold=_path_str(path),
            meta=dict(forward.meta),
        )

    def premise(self, forward: Record) -> str:
        return str(forward.meta["centre"])

    def normalize(self, answer: str) -> str:
        return ",".join(self.parse_answer(answer))

    teacher_forms = ("canonical", "result_first", "verbose", "worded")

    def parse_answer(self, answer: str) -> list[str]:
        """The path's nodes in order, as written."""
        return [p.strip() for p in answer.strip().rstrip(".").split(",") if p.strip()]

    def answer_outcome(self, record: Record, answer: str) -> dict[str, bool]:
        """How a centre-to-leaf answer relates to the graph. valid: starts at the centre and follows edges to a leaf
        (some arm, not necessarily the goal's); first_node: the node after the centre is the goal arm's (the critical
        token); correct: the goal's path exactly."""
        nodes = self.parse_answer(answer)
        path = [str(n) for n in record.meta["path"]]
        edges = {(str(a), str(b)) for a, b in record.meta["edges"]}
        parents = {a for a, _ in edges}
        valid = (len(nodes) >= 2 and nodes[0] == path[0] and all((a, b) in edges for a, b in zip(nodes, nodes[1:]))
                 and nodes[-1] not in parents)
        return {"valid": valid, "first_node": len(nodes) >= 2 and nodes[1] == path[1], "correct": nodes == path}

    def restyle_step(self, step: str, form: str) -> str:
        """"a>b" in the teacher's form: canonical (as is), result_first "b from a", verbose "at a, take a>b: b", or
        worded "go from a to b". A line of another shape is kept as it is."""
        super().restyle_step(step, form)  # names an unknown form
        m = STEP.match(step.strip())
        if m is None or form == "canonical":
            return step
        a, arrow, b = m.groups()
        if form == "result_first":
            return f"{b} from {a}"
        if form == "worded":
            return f"go from {a} to {b}"
        return f"at {a}, take {a}{arrow}{b}: {b}"

    def lookups(self, rec: Record, rng: random.Random) -> list[tuple[str, str]]:
        """Every well-defined edge look-up of one graph, shuffled: the child of a node, the parent of a node.

        The centre's child is left out: it has `degree` of them, so the look-up has no single answer.
        """
        centre = rec.meta["centre"]
        out = [(f"{a}>", f"{b}") for a, b in rec.meta["edges"] if a != centre]
        out += [(f"{b}<", f"{a}") for a, b in rec.meta["edges"]]
        rng.shuffle(out)
        return out

    @staticmethod
    def _edge_header(rec: Record) -> str:
        return f"Edges: {edges_text(rec.meta['edges'])}."

    def primitive_skills(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """One edge look-up per graph, after the graph's edge list (the first look-up of a document)."""
        lines = []
        for i in range(n):
            rec = self.sample_forward(rng, i)
            prompt, target = self.lookups(rec, rng)[0]
            lines.append((f"{self._edge_header(rec)}\n{prompt}", target))
        return lines

    def primitive_documents(self, rng: random.Random, n: int, max_pack: int) -> list[list[Segment]]:
        """One graph per document: its edge list, then 1..max_pack distinct look-ups on it, one per line.

        Many look-ups share one edge list, so most of a document's tokens are looked up in, not read past.
        The held-out look-ups (`primitive_skills`) are on graphs of the knobs' full size.
        """
        kn: StarKnobs = self.knobs
        # graphs of every size up to the knobs: in a small graph a look-up has few candidates, so its
        # gradient is strong and the look-up circuit forms; it then carries to the full-size graphs
        sizes = [StarGraph({"degree": d, "path_length": length, "node_count": kn.node_count})
                 for d in range(2, kn.degree + 1) for length in range(2, kn.path_length + 1)]
        docs = []
        for i in range(n):
            rec = rng.choice(sizes).sample_forward(rng, i)
            picks = self.lookups(rec, rng)[: rng.randint(1, max_pack)]
            doc: list[Segment] = [(self._edge_header(rec), False)]
            for prompt, target in picks:
                doc += [(f"\n{prompt}", False), (target, True)]
            docs.append(doc)
        return docs
