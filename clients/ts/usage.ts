// Calling facesvc from TypeScript with plain fetch, typed by facesvc.d.ts, which
// openapi-typescript generates from openapi.json (`npm run generate`, then `npm run typecheck`).
// Every request and response type below comes from the schema: a route, field or status
// that changes on the server breaks this file at compile time.
import type { components, operations } from "./facesvc";

type Schemas = components["schemas"];
type Json<T> = T extends { content: { "application/json": infer B } } ? B : never;

export type NewUser = operations["create_user"]["requestBody"]["content"]["application/json"];
export type User = Json<operations["create_user"]["responses"][201]>;
export type EnrolledFace = Json<operations["enrol_face"]["responses"][201]>;
export type Verification = Json<operations["verify_user"]["responses"][200]>;
export type Identification = Json<operations["identify_face"]["responses"][200]>;
export type IdentifyQuery = NonNullable<operations["identify_face"]["parameters"]["query"]>;
export type Problem = Schemas["Problem"];

/** An error answer: its status and the RFC 9457 problem the service sent. */
export class FacesvcError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem | null,
  ) {
    super(problem ? `${problem.title}: ${problem.detail ?? ""}` : `HTTP ${status}`);
  }
}

export class Facesvc {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey?: string,
  ) {}

  createUser(user: NewUser): Promise<User> {
    return this.send("POST", "/v1/users", JSON.stringify(user), 201);
  }

  /** Enrol a photo; `consent`: the person agreed to have their face stored (required). */
  enrolFace(userId: string, photo: Blob, consent: true): Promise<EnrolledFace> {
    const form = image(photo);
    form.append("consent", String(consent));
    return this.send("POST", `/v1/users/${userId}/faces`, form, 201);
  }

  getUser(userId: string): Promise<User> {
    return this.send("GET", `/v1/users/${userId}`, undefined, 200);
  }

  verify(userId: string, photo: Blob): Promise<Verification> {
    return this.send("POST", `/v1/users/${userId}/verify`, image(photo), 200);
  }

  identify(photo: Blob, query: IdentifyQuery = {}): Promise<Identification> {
    const search = query.top_k === undefined ? "" : `?top_k=${query.top_k}`;
    return this.send("POST", `/v1/identify${search}`, image(photo), 200);
  }

  async deleteUser(userId: string): Promise<void> {
    await this.send<null>("DELETE", `/v1/users/${userId}`, undefined, 204);
  }

  private async send<T>(
    method: string,
    path: string,
    body: string | FormData | undefined,
    expected: number,
  ): Promise<T> {
    const headers = new Headers({ Accept: "application/json" });
    if (this.apiKey) headers.set("X-API-Key", this.apiKey);
    if (typeof body === "string") headers.set("Content-Type", "application/json");
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = body;
    const response = await fetch(new URL(path, this.baseUrl), init);
    if (response.status !== expected) {
      const isProblem = response.headers.get("content-type")?.includes("json") ?? false;
      throw new FacesvcError(response.status, isProblem ? ((await response.json()) as Problem) : null);
    }
    return (response.status === 204 ? null : await response.json()) as T;
  }
}

function image(photo: Blob): FormData {
  const form = new FormData();
  form.append("image", photo, "photo.jpg");
  return form;
}

export interface FlowResult {
  userId: string;
  facesEnrolled: number | null;
  verified: boolean;
  similarity: number | null;
  probability: number | null;
  identified: string | null;
  deleted: boolean;
}

/** Create a user, enrol photos, verify and identify with another photo, delete the user. */
export async function mainFlow(
  api: Facesvc,
  name: string,
  enrolPhotos: Blob[],
  probe: Blob,
): Promise<FlowResult> {
  const user = await api.createUser({ name, metadata: { source: "clients/ts/usage.ts" } });
  for (const photo of enrolPhotos) {
    const face = await api.enrolFace(user.id, photo, true);
    console.error(`enrolled face ${face.face_id}, box ${JSON.stringify(face.box)}`);
  }
  const verification = await api.verify(user.id, probe);
  const identification = await api.identify(probe, { top_k: 3 });
  await api.deleteUser(user.id);
  let deleted = false;
  try {
    await api.getUser(user.id);
  } catch (error) {
    deleted = error instanceof FacesvcError && error.problem?.type === "/problems/user-not-found";
  }
  return {
    userId: user.id,
    facesEnrolled: verification.faces_compared,
    verified: verification.match,
    similarity: verification.similarity,
    probability: verification.probability ?? null,
    identified: identification.match ?? null,
    deleted,
  };
}

// Compile-time checks that the generated types are real, not `any`.
export const newUser: NewUser = { name: "Ada Lovelace", external_id: "emp-0042" };
// @ts-expect-error: `name` is required by the schema
export const nameless: NewUser = { external_id: "emp-0042" };
// @ts-expect-error: `match` is a boolean
export const notABoolean: Verification["match"] = "yes";
