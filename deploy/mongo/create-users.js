// Each Selfex service gets a MongoDB user of its own, limited to its own database
// (<SELFEX_MONGO_DB>_<service>, as Settings.database_for names it): readWrite there and nothing
// elsewhere. The audit service may only insert and find (plus create its collection and indexes):
// its log is append-only, and its user cannot change or remove what it wrote.
//
// Passwords come from the environment: SELFEX_MONGO_PASSWORD_<SERVICE>. Idempotent: a user that
// exists gets its password and roles set again. docker-compose.yml runs it once, on the first start
// of an empty volume (/docker-entrypoint-initdb.d); elsewhere run it as an administrator:
//   mongosh "mongodb://ADMIN@HOST/?replicaSet=rs0&authSource=admin" deploy/mongo/create-users.js
const prefix = process.env.SELFEX_MONGO_DB || "selfex";
const AUDIT_ACTIONS = ["find", "insert", "createCollection", "createIndex", "listCollections", "listIndexes"];

function password(service) {
  const name = `SELFEX_MONGO_PASSWORD_${service.toUpperCase()}`;
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function ensureUser(database, user, pwd, roles) {
  if (database.getUser(user)) {
    database.updateUser(user, { pwd, roles });
  } else {
    database.createUser({ user, pwd, roles });
  }
  print(`user ${user}: ${JSON.stringify(roles)}`);
}

for (const service of ["registration", "verification", "blocking", "gateway", "notification", "forwarder"]) {
  const database = db.getSiblingDB(`${prefix}_${service}`);
  ensureUser(database, `selfex_${service}`, password(service), [{ role: "readWrite", db: database.getName() }]);
}

const audit = db.getSiblingDB(`${prefix}_audit`);
const privileges = [{ resource: { db: audit.getName(), collection: "" }, actions: AUDIT_ACTIONS }];
if (audit.getRole("appendOnly")) {
  audit.updateRole("appendOnly", { privileges, roles: [] });
} else {
  audit.createRole({ role: "appendOnly", privileges, roles: [] });
}
ensureUser(audit, "selfex_audit", password("audit"), [{ role: "appendOnly", db: audit.getName() }]);
