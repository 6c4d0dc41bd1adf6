/**
 * The GraphQL documents the Railway provider sends, and the shapes of their answers.
 *
 * Every field and argument here was checked against Railway's public schema (introspection), and
 * `operations.test.ts` validates each document against it when the schema file is available: the
 * earlier system queried a field Railway had renamed (`serviceDomains`), the query failed
 * silently and healthy instances were declared crashed (seed §8, `f1a1fab`).
 *
 * Scalar-returning mutations (`serviceDelete: Boolean!`) take no selection set.
 */

/** Services per page; also Railway's services-per-project limit, so one page nearly always suffices. */
export const SERVICES_PAGE_SIZE = 100;
/** Service instances per service (one per environment); past this the listing is marked incomplete. */
export const INSTANCES_PAGE_SIZE = 20;

/**
 * What the listing reads of one service. Deployment status comes from the service instance's
 * `latestDeployment` (scoped to that environment); `Service.deployments` has no environment
 * filter in the schema (no `input:` argument), so its newest entry is only used when it is in our
 * environment.
 */
const SERVICE_SELECTION =
  "id name createdAt " +
  `serviceInstances(first: ${INSTANCES_PAGE_SIZE}) { edges { node { environmentId source { image } domains { serviceDomains { domain } } latestDeployment { id status createdAt } } } pageInfo { hasNextPage } } ` +
  "deployments(first: 1) { edges { node { id status createdAt environmentId } } }";

const SERVICES_CONNECTION = (after: string | null) =>
  `services(first: ${SERVICES_PAGE_SIZE}${after ? `, after: ${after}` : ""}) { edges { node { ${SERVICE_SELECTION} } } pageInfo { hasNextPage endCursor } }`;

/**
 * The listing: ONE document, one alias per project (`p0`, `p1`, …), project ids as variables.
 * Cost is one request per tick whatever the fleet size (the earlier 1+N calls per tick used 82%
 * of the hourly budget, seed §5.4).
 */
export function listDocument(projectCount: number): string {
  if (projectCount < 1) throw new Error("listDocument: no projects");
  const vars: string[] = [];
  const fields: string[] = [];
  for (let i = 0; i < projectCount; i++) {
    vars.push(`$p${i}: String!`);
    fields.push(`p${i}: project(id: $p${i}) { id ${SERVICES_CONNECTION(null)} }`);
  }
  return `query PoolList(${vars.join(", ")}) { ${fields.join(" ")} }`;
}

/** Follow-up pages, only for projects whose first page said `hasNextPage` (the documented exception). */
export function listPageDocument(projectCount: number): string {
  const vars: string[] = [];
  const fields: string[] = [];
  for (let i = 0; i < projectCount; i++) {
    vars.push(`$p${i}: String!`, `$a${i}: String`);
    fields.push(`p${i}: project(id: $p${i}) { id ${SERVICES_CONNECTION(`$a${i}`)} }`);
  }
  return `query PoolListPage(${vars.join(", ")}) { ${fields.join(" ")} }`;
}

const ENVIRONMENTS = "environments(first: 100) { edges { node { id name } } }";

/** Environments of every configured project (and, with a workspace, the pool's own projects there). */
export function resolveDocument(projectCount: number, withWorkspace: boolean): string {
  const vars: string[] = [];
  const fields: string[] = [];
  for (let i = 0; i < projectCount; i++) {
    vars.push(`$p${i}: String!`);
    fields.push(`p${i}: project(id: $p${i}) { id name ${ENVIRONMENTS} }`);
  }
  if (withWorkspace) {
    vars.push("$w: String!");
    fields.push(`w: projects(workspaceId: $w, first: 100) { edges { node { id name ${ENVIRONMENTS} } } pageInfo { hasNextPage } }`);
  }
  if (fields.length === 0) throw new Error("resolveDocument: nothing to resolve");
  return `query ResolveEnvironments(${vars.join(", ")}) { ${fields.join(" ")} }`;
}

/** What a project token is scoped to (one environment of one project). */
export const PROJECT_TOKEN_SCOPE = "query ProjectTokenScope { projectToken { projectId environmentId } }";

/**
 * Creates the service with its image AND all variables, so the first (and only) deploy boots with
 * them: separate variable calls made ~10% of instances boot without vars (seed §8, #371).
 */
export const SERVICE_CREATE = "mutation ServiceCreate($input: ServiceCreateInput!) { serviceCreate(input: $input) { id name createdAt } }";

export const SERVICE_DOMAIN_CREATE = "mutation ServiceDomainCreate($input: ServiceDomainCreateInput!) { serviceDomainCreate(input: $input) { id domain } }";

/** Deletes the service in every environment. */
export const SERVICE_DELETE = "mutation ServiceDelete($id: String!) { serviceDelete(id: $id) }";

/** Deletes only our environment's instance: used when the service also lives in other environments. */
export const SERVICE_DELETE_IN_ENVIRONMENT =
  "mutation ServiceDeleteInEnvironment($id: String!, $environmentId: String!) { serviceDelete(id: $id, environmentId: $environmentId) }";

export const SERVICE_RENAME = "mutation ServiceRename($id: String!, $input: ServiceUpdateInput!) { serviceUpdate(id: $id, input: $input) { id name } }";

export const PROJECT_CREATE = `mutation ProjectCreate($input: ProjectCreateInput!) { projectCreate(input: $input) { id name ${ENVIRONMENTS} } }`;

/** Names of a project's services: finds a service whose create timed out (it may exist). */
export const PROJECT_SERVICE_NAMES = `query ProjectServiceNames($id: String!) { project(id: $id) { services(first: ${SERVICES_PAGE_SIZE}) { edges { node { id name } } } } }`;

/**
 * Is the token still good? Asked only after a service id answered "Not Authorized", which Railway
 * also says for ids that no longer exist (access is checked before existence).
 */
export const TOKEN_CHECK = "query TokenCheck($id: String!) { project(id: $id) { id } }";

/** The workspace's notification rules (is our deployment webhook registered?). */
export const NOTIFICATION_RULES =
  "query NotificationRules($workspaceId: String!) { notificationRules(workspaceId: $workspaceId) { id eventTypes channels { id config } } }";

/** A rule that sends deployment events of the workspace to a webhook. */
export const NOTIFICATION_RULE_CREATE =
  "mutation NotificationRuleCreate($input: CreateNotificationRuleInput!) { notificationRuleCreate(input: $input) { id } }";

export interface NotificationRulesData {
  notificationRules: Array<{ id: string; eventTypes: string[]; channels: Array<{ id: string; config: unknown }> }> | null;
}
/**
 * An upgrade of a running service in place (a claimed agent, issue 11), three requests:
 * 1. the template's variables, upserted (not replaced: the service's own variables, its instance's
 *    keys, stay) without a deploy of their own (`skipDeploys`);
 * 2. the service instance's image source set to the template's image;
 * 3. a deploy of the service instance as it is now configured. `serviceInstanceRedeploy` would not do:
 *    it redeploys the latest deployment "using its existing commit", i.e. the old image (the earlier
 *    pool's `deploymentRedeploy` replayed old images, #280). Setting an image source may itself start
 *    a deploy (the earlier pool's notes say so, unverified): then this one supersedes it, at the cost
 *    of one superseded deployment rather than an upgrade that silently never deploys.
 */
export const VARIABLES_UPSERT = "mutation VariablesUpsert($input: VariableCollectionUpsertInput!) { variableCollectionUpsert(input: $input) }";

export const SERVICE_INSTANCE_SOURCE =
  "mutation ServiceInstanceSource($serviceId: String!, $environmentId: String!, $input: ServiceInstanceUpdateInput!) { serviceInstanceUpdate(serviceId: $serviceId, environmentId: $environmentId, input: $input) }";

export const SERVICE_INSTANCE_DEPLOY =
  "mutation ServiceInstanceDeploy($serviceId: String!, $environmentId: String!) { serviceInstanceDeployV2(serviceId: $serviceId, environmentId: $environmentId) }";

/** Every fixed document, for schema validation in tests. */
export const ALL_DOCUMENTS: Record<string, string> = {
  list1: listDocument(1),
  list5: listDocument(5),
  listPage2: listPageDocument(2),
  resolve3: resolveDocument(3, false),
  resolveWorkspace: resolveDocument(2, true),
  resolveWorkspaceOnly: resolveDocument(0, true),
  PROJECT_TOKEN_SCOPE,
  SERVICE_CREATE,
  SERVICE_DOMAIN_CREATE,
  SERVICE_DELETE,
  SERVICE_DELETE_IN_ENVIRONMENT,
  NOTIFICATION_RULES,
  NOTIFICATION_RULE_CREATE,
  SERVICE_RENAME,
  PROJECT_CREATE,
  PROJECT_SERVICE_NAMES,
  TOKEN_CHECK,
  VARIABLES_UPSERT,
  SERVICE_INSTANCE_SOURCE,
  SERVICE_INSTANCE_DEPLOY,
};

// ---- Answer shapes (everything optional/nullable: the answer is checked, not trusted) ----

export interface Edge<T> {
  node?: T | null;
}

export interface Connection<T> {
  edges?: Array<Edge<T> | null> | null;
  pageInfo?: { hasNextPage?: boolean | null; endCursor?: string | null } | null;
}

export interface DeploymentNode {
  id?: string;
  status?: string | null;
  createdAt?: string | null;
  environmentId?: string | null;
}

export interface ServiceInstanceNode {
  environmentId?: string | null;
  source?: { image?: string | null } | null;
  domains?: { serviceDomains?: Array<{ domain?: string | null } | null> | null } | null;
  latestDeployment?: DeploymentNode | null;
}

export interface ServiceNode {
  id?: string;
  name?: string;
  createdAt?: string;
  serviceInstances?: Connection<ServiceInstanceNode> | null;
  deployments?: Connection<DeploymentNode> | null;
}

export interface ProjectServicesNode {
  id?: string;
  services?: Connection<ServiceNode> | null;
}

/** `{p0: …, p1: …}` */
export type ListData = Record<string, ProjectServicesNode | null | undefined>;

export interface EnvironmentNode {
  id?: string;
  name?: string;
}

export interface ProjectEnvironmentsNode {
  id?: string;
  name?: string;
  environments?: Connection<EnvironmentNode> | null;
}

export type ResolveData = Record<string, ProjectEnvironmentsNode | Connection<ProjectEnvironmentsNode> | null | undefined>;

export interface ProjectTokenScopeData {
  projectToken?: { projectId?: string; environmentId?: string } | null;
}

export interface ServiceCreateData {
  serviceCreate?: { id?: string; name?: string; createdAt?: string } | null;
}

export interface ServiceDomainCreateData {
  serviceDomainCreate?: { id?: string; domain?: string } | null;
}

export interface ServiceDeleteData {
  serviceDelete?: boolean | null;
}

export interface ServiceRenameData {
  serviceUpdate?: { id?: string; name?: string } | null;
}

export interface ProjectCreateData {
  projectCreate?: ProjectEnvironmentsNode | null;
}

export interface VariablesUpsertData {
  variableCollectionUpsert?: boolean | null;
}

export interface ServiceInstanceSourceData {
  serviceInstanceUpdate?: boolean | null;
}

export interface ServiceInstanceDeployData {
  /** The new deployment's id. */
  serviceInstanceDeployV2?: string | null;
}

export interface ProjectServiceNamesData {
  project?: { services?: Connection<{ id?: string; name?: string }> | null } | null;
}
