"""gateway: employees sign in at their company's IdP and land in their LMS, signed in."""

__version__ = "0.1.0"
