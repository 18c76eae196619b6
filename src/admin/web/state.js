// What the page knows about the session: the signed-in principal and what its role
// allows (from GET /v1/whoami, never guessed), the orgs it sees and the chosen one, and
// a tiny event bus so that pages refresh each other without importing each other.

export const state = {
  // GET /v1/whoami: { principal, can, why_not, grantable_roles }.
  me: null,
  orgs: [],
  org: null,
  // Principal id → name, for audit and key details (owners and admins only).
  people: new Map(),
};

/** Whether the signed-in principal may do `action` (whoami's `can`). */
export const can = (action) => Boolean(state.me && state.me.can && state.me.can[action]);
/** The server's reason why not, or null. */
export const whyNot = (action) => (state.me && state.me.why_not && state.me.why_not[action]) || null;

export const orgPath = () => '/v1/orgs/' + encodeURIComponent(state.org.id);
export const keyPath = (id) => orgPath() + '/keys/' + encodeURIComponent(id);

export const personName = (id) => (state.people.has(id) ? state.people.get(id) + ' (' + id + ')' : id);

const handlers = new Map();
export function on(name, handler) {
  if (!handlers.has(name)) handlers.set(name, []);
  handlers.get(name).push(handler);
}
export function emit(name, ...args) {
  for (const handler of handlers.get(name) || []) handler(...args);
}
